"""Training throughput and MFU on this machine, and the val loss of nanoGPT's CPU recipe after 2000 steps.

Each configuration trains twice, with its products in fp32 and in bf16 (`dtype=fp32|bf16`; autocast, fp32
master weights). MFU = (6 N + 12 L H Q T) x tokens/s / (the matmul peak of the dtype used, measured in this same
run), nanoGPT's formula, with N the parameters without position embeddings; L, H, Q, T the layers, heads, head
size and block size. The peak is measured just before and just after each run and the higher of the two is
used: a shared VM's speed drifts by a third within minutes, and a peak taken minutes away would measure
another machine.

    python benchmarks/train_speed.py            (about 4 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import shutil
import time
from functools import partial

import torch
from common import WORK, machine, peak_around, tiny_shakespeare_data, write_results

from lucidlm.data import open_split
from lucidlm.evaluate import split_loss
from lucidlm.model import GPT
from lucidlm.run_config import resolve_config
from lucidlm.train import train
from lucidlm.train.metrics import MetricsLog

# nanoGPT's own train.py with its CPU recipe, on the same kind of 2-core machine (the anchor): its code is
# not a package, and nothing outside PyPI can be fetched here, so it is not run beside ours
NANOGPT_BABY_TOKENS_PER_S = 15_400


def flops_per_token(model: GPT) -> int:
    c = model.config
    return 6 * model.num_params() + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size


def measure(name: str, data, preset: str, overrides: list[str], steps: int) -> dict:
    run = WORK / f"run-{name}"
    shutil.rmtree(run, ignore_errors=True)
    config = resolve_config(
        preset, overrides=["vocab_size=65", f"max_steps={steps}", "device=cpu", f"eval_interval={steps}", *overrides]
    )
    started = time.perf_counter()
    result = train(data, run, config, progress=False)
    wall = time.perf_counter() - started
    full_val, _ = split_loss(result.model, open_split(data, "val"))
    # tokens/s from the 4th step on: the first steps of a compiled run wait for the compile
    elapsed = {r["step"]: r["elapsed"] for r in MetricsLog(run / "metrics.jsonl").read() if "loss" in r}
    tokens_per_step = config.train.batch_size * config.train.grad_accum * config.model.block_size
    return {
        "name": name,
        "steps": steps,
        "params": result.model.num_params(),
        "flops_per_token": flops_per_token(result.model),
        "tokens_per_s": round(tokens_per_step * (steps - 3) / (elapsed[steps] - elapsed[3])),
        "wall_s": round(wall, 1),
        "val_loss_estimate": round(result.val_loss, 4),
        "val_loss_full": round(full_val, 4),
        "config": config.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps: throughput only, no 2000-step loss")
    args = parser.parse_args()
    data = tiny_shakespeare_data()
    wide = ["n_layer=6", "n_head=6", "n_embd=384", "block_size=256", "batch_size=16", "dropout=0.0"]
    both = ("fp32", "bf16")
    baby_steps, wide_steps = (200, 10) if args.quick else (2000, 30)
    configs = [  # (name, overrides, steps, dtypes)
        ("nanogpt-baby", ["compile=false"], baby_steps, both),
        ("nanogpt-baby, compiled", ["compile=true"], baby_steps, ("bf16",)),
        ("10.6M (6x384, block 256)", [*wide, "compile=false"], wide_steps, both),
        ("10.6M, compiled", [*wide, "compile=true"], wide_steps, ("bf16",)),
    ]
    rows = []
    for name, overrides, steps, dtypes in configs:
        for dtype in dtypes:
            work = partial(measure, name, data, "nanogpt-baby", [*overrides, f"dtype={dtype}"], steps)
            row, peak = peak_around(work, torch.bfloat16 if dtype == "bf16" else torch.float32)
            row["dtype"], row["peak_gflops"] = dtype, round(peak / 1e9, 1)
            row["mfu"] = round(row["flops_per_token"] * row["tokens_per_s"] / peak, 4)
            rows.append(row)
    results = {"machine": machine(), "runs": rows}
    lines = [
        "## Training speed on the CPU (`benchmarks/train_speed.py`)",
        "",
        f"Machine: {machine()['threads']} threads, torch {machine()['torch']}; the matmul peak of the run's dtype is "
        "measured just before and after each run, and MFU is against it. Data: Tiny Shakespeare, char tokens, "
        "nanoGPT's 90/10 split.",
        "",
        "| config | dtype | params | steps | tokens/s | peak | MFU | val loss (20 batches) | val loss (whole split) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['dtype']} | {row['params'] / 1e6:.2f}M | {row['steps']} | "
            f"{row['tokens_per_s']:,} | {row['peak_gflops']:.0f} GFLOP/s | {row['mfu']:.0%} | "
            f"{row['val_loss_estimate']:.4f} | {row['val_loss_full']:.4f} |"
        )
    rate = {(row["name"], row["dtype"]): row["tokens_per_s"] for row in rows}
    speedup = {n: rate[n, "bf16"] / rate[n, "fp32"] for n, _, _, dtypes in configs if dtypes == both}
    lines += ["", "bf16 over fp32 tokens/s, in the same run: " + ", ".join(f"{n} {x:.2f}x" for n, x in speedup.items())]
    results["bf16_speedup"] = {n: round(x, 2) for n, x in speedup.items()}
    lines += [
        "",
        "Compiled rows compile the blocks (`GPT.compile_blocks`, what `compile=auto` does for a run of 500 steps or "
        "more); their tokens/s are from the 4th step on, so that the compile does not count: about 25 s on the "
        "first step from an empty cache, about 4 s once Inductor's on-disk cache holds the shape.",
        "",
        f"nanoGPT on the same kind of machine (issue anchors; its train.py trains in fp32 and eager on a CPU): baby "
        f"recipe about {NANOGPT_BABY_TOKENS_PER_S:,} tokens/s, 52% MFU, val loss 1.886 after 2000 steps; the 10.6M "
        "config about 66% MFU. nanogpt-baby against that anchor: "
        + ", ".join(
            f"{row['name']} {row['dtype']} {row['tokens_per_s'] / NANOGPT_BABY_TOKENS_PER_S:.2f}x"
            for row in rows
            if row["name"].startswith("nanogpt-baby")
        )
        + ".",
    ]
    write_results("train_speed", results, "\n".join(lines))


if __name__ == "__main__":
    main()
