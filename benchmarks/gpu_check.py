"""The CUDA paths on one GPU, unattended, in one call (issue 38): `make gpu-check`, under 8 minutes on an H100.

1. The CUDA tests (tests/gpu, with LUCIDLM_TEST_CUDA=1): the forward pass, decoding, the serving engine and a
   compiled bf16 training step, held to the CPU's numbers.
2. GPT-2 small (124M) training steps in bf16, blocks compiled, fused AdamW, at block 1024: tokens/s and MFU
   against the card's bf16 peak (nanoGPT's count: 6N + 12 L T C FLOPs a token).
3. Tiny Shakespeare, char level, against a 60 s budget (compile outside it), then the whole-split val loss.
   Target at most 1.45 (nanoGPT reaches 1.4697 in about 3 minutes on an A100).
4. Decoding GPT-2-124M-shaped weights: tokens/s at batch 1, and through the serving engine at 16 requests.

It writes benchmarks/results/gpu_check.json and its table in docs/benchmarks.md. Without CUDA it stops at once
with one line and exit status 2: a check that was asked for never skips.

    python benchmarks/gpu_check.py [--data DIR]   (DIR: Tiny Shakespeare prepared as char data; by default
                                                   it is prepared from ../shared/data/tinyshakespeare.txt)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import ROOT, machine, tiny_shakespeare_data, write_results

# Dense bf16 peaks (FLOP/s) of the cards a session may be lent, by a piece of the name PyTorch reports.
BF16_PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
GPT2_STEPS, GPT2_BATCH = 30, 16
SHAKESPEARE_BUDGET = 60.0
# The Shakespeare run's shape for a GPU, until the compute-aware recipe chooses one: nanoGPT's GPU config
# (6 x 384, block 256, batch 64) in the preset's Llama layout, with Muon.
SHAKESPEARE_GPU = [
    "n_layer=6", "n_head=6", "n_embd=384", "block_size=256", "batch_size=64", "dropout=0.2", "eval_interval=250",
]  # fmt: skip


def card_peak(name: str) -> float | None:
    return next((peak for piece, peak in BF16_PEAKS.items() if piece in name), None)


def run_cuda_tests() -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gpu"],
        cwd=ROOT,
        env={**os.environ, "LUCIDLM_TEST_CUDA": "1"},
        capture_output=True,
        text=True,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    print(result.stdout[-3000:], file=sys.stderr)
    return {"passed": result.returncode == 0, "summary": summary, "seconds": round(time.perf_counter() - started, 1)}


def gpt2_training() -> dict:
    from lucidlm.run_config import resolve_config
    from lucidlm.train.backends import TorchBackend
    from lucidlm.train.distributed import Distributed

    config = resolve_config(
        "gpt2-small", overrides=["vocab_size=50304", f"batch_size={GPT2_BATCH}", "compile=true", "device=cuda"]
    )
    backend = TorchBackend(config, torch.device("cuda"), Distributed())
    model, T = config.model, config.model.block_size
    ids = torch.randint(0, model.vocab_size, (GPT2_BATCH, T + 1), device="cuda")
    batch = (ids[:, :-1], ids[:, 1:])
    compile_seconds = backend.compile_now(batch)
    backend.train_step([batch], config.train.lr, 1.0)  # the optimizer's first step allocates its moments
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(GPT2_STEPS):
        backend.train_step([batch], config.train.lr, 1.0)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / GPT2_STEPS
    parameters = backend.model.num_params()
    flops_per_token = 6 * parameters + 12 * model.n_layer * T * model.n_embd
    tokens_per_second = GPT2_BATCH * T / seconds
    peak = card_peak(torch.cuda.get_device_name())
    return {
        "parameters": parameters,
        "precision": backend.precision,
        "compile_seconds": round(compile_seconds, 1),
        "ms_per_step": round(seconds * 1e3, 1),
        "tokens_per_second": round(tokens_per_second),
        "mfu": None if peak is None else round(flops_per_token * tokens_per_second / peak, 3),
    }


def shakespeare(data) -> dict:
    from lucidlm.data import open_split
    from lucidlm.evaluate import score
    from lucidlm.load import load_model
    from lucidlm.run_config import resolve_config
    from lucidlm.train import train

    run = ROOT / "build" / "bench" / "gpu-shakespeare"
    shutil.rmtree(run, ignore_errors=True)  # the check's own scratch run
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    overrides = [*SHAKESPEARE_GPU, f"time_budget={SHAKESPEARE_BUDGET}", "device=cuda", f"vocab_size={vocab}"]
    result = train(data, run, resolve_config("shakespeare-char", overrides=overrides), progress=False)
    model, tokenizer, _ = load_model(run, "latest", device=torch.device("cuda"))
    scored = score(model, open_split(data, "val"), tokenizer)
    return {
        "steps": result.step,
        "seconds": round(result.elapsed, 1),
        "compile_seconds": round(result.compile_seconds, 1),
        "tokens_per_second": round(result.tokens_per_second),
        "val_loss": round(scored["loss"], 4),
        "val_bpb": round(scored["bits_per_byte"], 4),
    }


def decoding() -> dict:
    from lucidlm.decode import SamplingConfig
    from lucidlm.generate import generate_ids
    from lucidlm.model import GPT, GPTConfig
    from lucidlm.serve import Engine, Request
    from lucidlm.tokenizers import BPETokenizer

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True)
    model = GPT(config).to("cuda", torch.bfloat16).eval()
    greedy, new_tokens = SamplingConfig(temperature=0), 256
    list(generate_ids(model, [1, 2, 3], 8, greedy))  # the first call's kernels and allocations
    torch.cuda.synchronize()
    started = time.perf_counter()
    list(generate_ids(model, [1, 2, 3], new_tokens, greedy))
    single = new_tokens / (time.perf_counter() - started)
    tokenizer = BPETokenizer.train(["a few words to decode the engine's tokens with"], 300)
    engine, requests = Engine(model, tokenizer, max_batch=16), 16
    for index in range(requests):
        engine.submit(Request([1 + index, 2], new_tokens, greedy, lambda event: None))
    started = time.perf_counter()
    engine.run_until_idle()
    batched = requests * new_tokens / (time.perf_counter() - started)
    return {"batch_1_tokens_per_second": round(single, 1), "engine_16_tokens_per_second": round(batched, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Tiny Shakespeare prepared as char data (default: prepared here)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: this PyTorch sees no CUDA GPU; run it on a machine with an NVIDIA GPU", file=sys.stderr)
        sys.exit(2)
    data = Path(args.data) if args.data else tiny_shakespeare_data()
    card = torch.cuda.get_device_name()
    started = time.perf_counter()
    results = {"machine": {**machine(), "gpu": card, "bf16_peak": card_peak(card)}}
    results["tests"] = run_cuda_tests()
    results["gpt2_small_training"] = gpt2_training()
    results["shakespeare_60s"] = shakespeare(data)
    results["decoding_gpt2_shape"] = decoding()
    results["seconds"] = round(time.perf_counter() - started, 1)
    t, g, s, d = (results[k] for k in ("tests", "gpt2_small_training", "shakespeare_60s", "decoding_gpt2_shape"))
    mfu = "unknown peak" if g["mfu"] is None else f"{g['mfu']:.0%}"
    rows = [
        ("CUDA tests (tests/gpu)", t["summary"]),
        (
            f"GPT-2 small training, bf16, compiled, fused AdamW, batch {GPT2_BATCH} x 1024",
            f"{g['tokens_per_second']:,} tokens/s, {g['ms_per_step']} ms a step, MFU {mfu} "
            f"(compile {g['compile_seconds']} s)",
        ),
        (
            f"Tiny Shakespeare in {SHAKESPEARE_BUDGET:.0f} s (6 x 384, block 256, batch 64; target at most 1.45)",
            f"val loss {s['val_loss']} ({s['val_bpb']} bits/byte) after {s['steps']} steps, "
            f"{s['tokens_per_second']:,} tokens/s",
        ),
        (
            "decoding, GPT-2-124M shape, bf16",
            f"{d['batch_1_tokens_per_second']} tokens/s at batch 1; "
            f"{d['engine_16_tokens_per_second']} through the engine at 16 requests",
        ),
    ]
    table = "\n".join(
        [
            "## The CUDA paths on one GPU (`make gpu-check`, `benchmarks/gpu_check.py`)",
            "",
            f"Card: {card}; the whole check took {results['seconds']:.0f} s.",
            "",
            "| check | result |",
            "|---|---|",
            *(f"| {check} | {result} |" for check, result in rows),
        ]
    )
    write_results("gpu_check", results, table)
    if not t["passed"]:
        print("gpu-check: the CUDA tests failed (their output is above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
