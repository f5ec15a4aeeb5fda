"""The soaks, only in `make soak` (LUCIDLM_SOAK=1): they take minutes.

- the server as `lucidlm serve` runs it (the engine in its own process): 1,000 well-formed requests from 16
  concurrent clients, some of them streaming and some hanging up early; zero errors, and memory flat;
- atheris over the tokenizers (tests/reliability/fuzz_tokenizers.py), 100,000 inputs from a seed corpus of
  real tokenizer files and text."""

import asyncio
import os
import random

import httpx
import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("LUCIDLM_SOAK"), reason="the soak runs in `make soak`")
REQUESTS, CLIENTS = 1000, 16


def resident_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def test_a_thousand_requests_from_sixteen_clients(process_server):
    url, engine = process_server
    errors, memory = [], []

    async def client(number: int, http: httpx.AsyncClient, queue: asyncio.Queue) -> None:
        rng = random.Random(number)
        while not queue.empty():
            index = queue.get_nowait()
            body = dict(model="tiny", prompt="Hello", max_tokens=rng.randint(1, 40), temperature=1.0, seed=index)
            try:
                if rng.random() < 0.5:
                    async with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as response:
                        if response.status_code != 200:
                            errors.append((index, response.status_code))
                        async for _line in response.aiter_lines():
                            if rng.random() < 0.05:
                                break  # hang up mid-stream
                else:
                    response = await http.post(f"{url}/v1/completions", json=body)
                    if response.status_code != 200 or not response.json()["choices"]:
                        errors.append((index, response.status_code))
            except httpx.HTTPError as exc:
                errors.append((index, repr(exc)))
            if index % 100 == 0:
                memory.append(resident_mib() + resident_mib(engine.process.pid))  # HTTP + engine

    async def run() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(REQUESTS):
            queue.put_nowait(index)
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=CLIENTS)) as http:
            await asyncio.gather(*(client(n, http, queue) for n in range(CLIENTS)))

    asyncio.run(run())
    assert errors == []
    assert memory[-1] - memory[1] < 50, memory  # MiB; the first 100 requests warm the allocator up
    for _ in range(200):
        if engine.load() == (0, 0):
            break
        asyncio.run(asyncio.sleep(0.05))
    assert engine.load() == (0, 0)
    print(f"soak: {REQUESTS} requests, 0 errors, resident memory {memory[1]:.0f} -> {memory[-1]:.0f} MiB")


def test_atheris_finds_nothing_in_the_tokenizers(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from lucidlm.tokenizers import BPETokenizer, CharTokenizer

    pytest.importorskip("atheris", reason="`make soak` installs atheris (the fuzz extra)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    bpe = BPETokenizer.train(["hello world, hello there; the theme of the thing"] * 3, vocab_size=280)
    for name, tokenizer in (("char", CharTokenizer.train(["hello world"])), ("bpe", bpe)):
        (corpus / name).write_bytes(b"\x00" + json.dumps(tokenizer.to_dict()).encode())
    (corpus / "text").write_bytes(b"\x01" + "héllo wörld \U0001f600 the theme <|endoftext|>".encode())
    harness = Path(__file__).with_name("fuzz_tokenizers.py")
    command = [sys.executable, str(harness), str(corpus), "-atheris_runs=100000", "-max_len=8192"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"atheris: {result.stderr.strip().splitlines()[-1]}")
