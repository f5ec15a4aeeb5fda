"""Serving under load: aggregate generated tokens/s and time to first token at 1, 4, 8 and 16 concurrent
streaming clients, against `lucidlm serve`'s app running in its own process.

A baby-sized GPT (4 layers, 4 heads, 128 wide, 65-token vocabulary, block 256) with random weights (speed does
not depend on what the weights say). Every client streams one completion of 128 tokens at temperature 1 with
its own seed; all clients start together; each figure is the median of 7 runs, the client counts taking
turns. Target: at 8 clients, at least 4x the tokens/s of 1 client.

    python benchmarks/serve_load.py
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time

import httpx
from common import machine, write_results

NEW_TOKENS, CLIENTS, ROUNDS = 128, (1, 4, 8, 16), 7
VOCABULARY = [chr(32 + i) for i in range(65)]


def baby_model():
    import torch

    from lucidlm.model import GPT, GPTConfig
    from lucidlm.serve.server import decoding_threads
    from lucidlm.tokenizers import CharTokenizer

    torch.set_num_threads(decoding_threads())  # as `lucidlm serve` does
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=256, n_layer=4, n_head=4, n_embd=128)).eval()
    return model, CharTokenizer(VOCABULARY)


def serve(port_queue: multiprocessing.Queue) -> None:
    from lucidlm.serve import EngineProcess, ServerSettings, create_app
    from lucidlm.serve.server import bind, decoding_threads, run_forever

    model, tokenizer = baby_model()
    sock = bind("127.0.0.1", 0)
    port_queue.put(sock.getsockname()[1])
    engine = EngineProcess(model, tokenizer, max_batch=16, threads=decoding_threads())  # as `lucidlm serve`
    app = create_app(model, tokenizer, ServerSettings(model_id="baby"), engine)
    run_forever(app, sock)


async def stream_one(client: httpx.AsyncClient, url: str, seed: int) -> tuple[float, int]:
    """(seconds to the first token, tokens received) for one streaming completion."""
    body = dict(model="baby", prompt="ROMEO:", max_tokens=NEW_TOKENS, temperature=1.0, seed=seed, stream=True)
    started, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                tokens += 1
                first = first or time.perf_counter() - started
                json.loads(line[6:])
    return first, tokens


async def one_run(client: httpx.AsyncClient, url: str, clients: int) -> dict:
    started = time.perf_counter()
    results = await asyncio.gather(*(stream_one(client, url, seed) for seed in range(clients)))
    seconds = time.perf_counter() - started
    tokens = sum(n for _, n in results)
    assert tokens == clients * NEW_TOKENS, tokens
    return {
        "clients": clients,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "mean_time_to_first_token": sum(t for t, _ in results) / clients,
    }


async def served(url: str) -> list[dict]:
    """One row per client count: the median of ROUNDS runs. The rounds interleave the client counts, so a
    slow spell of this (shared, noisy) machine falls on all of them rather than on one."""
    runs: dict[int, list[dict]] = {clients: [] for clients in CLIENTS}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
        await stream_one(client, url, 0)  # warm up
        for _ in range(ROUNDS):
            for clients in CLIENTS:
                runs[clients].append(await one_run(client, url, clients))
    return [median_run(runs[clients]) for clients in CLIENTS]


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda run: run["tokens_per_second"])[len(runs) // 2]


def engine_alone() -> dict[int, float]:
    """Tokens/s of the decoding engine with no HTTP in the way, per client count (median of ROUNDS
    interleaved runs): the ceiling of the served figures."""
    from lucidlm.decode import SamplingConfig
    from lucidlm.serve import Engine, Request

    model, tokenizer = baby_model()
    engine = Engine(model, tokenizer, max_batch=16)
    runs: dict[int, list[dict]] = {clients: [] for clients in CLIENTS}
    for _ in range(ROUNDS):
        for clients in CLIENTS:
            for seed in range(clients):
                prompt = tokenizer.encode("ROMEO:")
                engine.submit(Request(prompt, NEW_TOKENS, SamplingConfig(1.0), lambda e: None, seed=seed))
            started = time.perf_counter()
            engine.run_until_idle()
            runs[clients].append({"tokens_per_second": clients * NEW_TOKENS / (time.perf_counter() - started)})
    return {clients: median_run(runs[clients])["tokens_per_second"] for clients in CLIENTS}


def main() -> None:
    context = multiprocessing.get_context("spawn")
    port_queue = context.Queue()
    server = context.Process(target=serve, args=(port_queue,))
    server.start()
    url = f"http://127.0.0.1:{port_queue.get(timeout=120)}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/v1/models", timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    rows = asyncio.run(served(url))
    server.terminate()
    server.join()
    single, alone = rows[0]["tokens_per_second"], engine_alone()
    for row in rows:
        row["speedup"] = row["tokens_per_second"] / single
        row["engine_alone_tokens_per_second"] = alone[row["clients"]]
    engine_single = rows[0]["engine_alone_tokens_per_second"]
    at8 = next(r for r in rows if r["clients"] == 8)["speedup"]
    table = "\n".join(
        [
            "### Serving under load (`python benchmarks/serve_load.py`)",
            "",
            f"Baby-sized GPT (4x128, block 256), {NEW_TOKENS} tokens per streaming client, all clients at once, "
            f"median of {ROUNDS} runs, the client counts taking turns. The server as `lucidlm serve` runs it: "
            "HTTP in one process, the decoding engine in another (`EngineProcess`, PyTorch on "
            "`decoding_threads()` threads: all cores but one), on the same cores as the clients (httpx, in a "
            "third process).",
            "",
            "| clients | aggregate tokens/s | x 1 client | mean time to first token | engine alone, no HTTP |",
            "|---|---|---|---|---|",
            *[
                f"| {r['clients']} | {r['tokens_per_second']:,.0f} | {r['speedup']:.2f}x | "
                f"{1000 * r['mean_time_to_first_token']:.0f} ms | {r['engine_alone_tokens_per_second']:,.0f} "
                f"({r['engine_alone_tokens_per_second'] / engine_single:.2f}x) |"
                for r in rows
            ],
            "",
            f"Target: at 8 clients at least 4x one client's tokens/s: **{at8:.2f}x** "
            f"({'met' if at8 >= 4 else 'not met'}).",
        ]
    )
    write_results("serve_load", {"machine": machine(), "rows": rows, "speedup_at_8": at8}, table)


if __name__ == "__main__":
    main()
