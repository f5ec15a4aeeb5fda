"""Where a training step's time goes, by kind of work: nanogpt-baby and the shakespeare-char preset on the CPU.

The forward + backward pass and the optimizer step are timed apart with the clock (medians over blocks of
steps). The forward + backward pass is then run under torch.profiler, and its operators' own time is split into
matrix products, attention, and the rest (element-wise passes, norms, copies, autograd's bookkeeping); the
shares are applied to the clock's time, so the profiler's own overhead does not count. The products' FLOPs over
their time, against the sgemm peak measured in the same run, say how well the products themselves run inside
a step (benchmarks/gemm_ceiling.py times them alone).

    python benchmarks/step_profile.py        (about 2 minutes)
"""

from __future__ import annotations

import statistics

import torch
from common import machine, peak_around, seconds, write_results
from torch.profiler import profile

from lucidlm.memory import keep_freed_memory
from lucidlm.model import GPT
from lucidlm.run_config import resolve_config
from lucidlm.train.optim import make_optimizer

CONFIGS = [("nanogpt-baby", "nanogpt-baby"), ("shakespeare-char (the preset)", "shakespeare-char")]
PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def profile_step(name: str, preset: str, blocks: int = 7, steps_per_block: int = 10) -> dict:
    config = resolve_config(preset, overrides=["vocab_size=65", "device=cpu"])
    torch.manual_seed(0)
    model = GPT(config.model)
    optimizer = make_optimizer(model, config.train, "cpu")
    B, T = config.train.batch_size, config.model.block_size
    x, y = torch.randint(0, 65, (B, T)), torch.randint(0, 65, (B, T))

    def forward_backward() -> None:
        model(x, y)[1].backward()
        optimizer.zero_grad(set_to_none=True)

    def step() -> None:  # as TorchEngine.train_step takes it
        model(x, y)[1].backward()
        if config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds(step, 10)  # warm-up: first-call allocations, the optimizer's state
    passes, steps = [], []
    for _ in range(blocks):  # interleaved, so a drift of the machine's speed touches both alike
        passes.append(seconds(forward_backward, steps_per_block))
        steps.append(seconds(step, steps_per_block))
    forward_backward_s = statistics.median(passes)
    optimizer_s = max(statistics.median(steps) - forward_backward_s, 0.0)

    with profile() as profiler:
        for _ in range(steps_per_block):
            forward_backward()
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS) / total
    attention = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key) / total

    c = config.model
    product_flops = 6 * model.num_params() * B * T  # the linear layers and the head, forward and backward
    attention_flops = 12 * c.n_layer * c.n_head * c.head_dim * c.block_size * B * T
    return {
        "config": name,
        "step_ms": (forward_backward_s + optimizer_s) * 1e3,
        "products_ms": products * forward_backward_s * 1e3,
        "attention_ms": attention * forward_backward_s * 1e3,
        "other_ms": (1 - products - attention) * forward_backward_s * 1e3,
        "optimizer_ms": optimizer_s * 1e3,
        "product_flops": product_flops,
        "flops_per_step": product_flops + attention_flops,
    }


def main() -> None:
    keep_freed_memory()  # as the trainer does
    rows, peak = peak_around(lambda: [profile_step(name, preset) for name, preset in CONFIGS])
    for row in rows:
        row["products_of_peak"] = round(row["product_flops"] / (row["products_ms"] / 1e3) / peak, 3)
        row["mfu"] = round(row["flops_per_step"] / (row["step_ms"] / 1e3) / peak, 3)
    lines = [
        "## Where a training step's time goes (`benchmarks/step_profile.py`)",
        "",
        f"{machine()['threads']} threads, fp32 sgemm peak {peak / 1e9:.0f} GFLOP/s in the same run. Forward + "
        "backward and the optimizer step timed apart (medians); the forward + backward split by `torch.profiler` "
        "into matrix products, attention (`scaled_dot_product_attention` and its backward) and the rest.",
        "",
        "| config | step | products | attention | the rest of forward + backward | optimizer | products at | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['step_ms']:.1f} ms | {row['products_ms']:.1f} ms | "
            f"{row['attention_ms']:.1f} ms | {row['other_ms']:.1f} ms | {row['optimizer_ms']:.1f} ms | "
            f"{row['products_of_peak']:.0%} of peak | {row['mfu']:.0%} |"
        )
    lines += [
        "",
        "MFU here counts the model's FLOPs only (nanoGPT's formula); the preset's Muon step adds about 1 GFLOP of "
        "Newton-Schulz products a step on top, inside its optimizer time.",
    ]
    results = {"machine": machine(), "sgemm_peak_gflops": round(peak / 1e9, 1), "runs": rows}
    write_results("step_profile", results, "\n".join(lines))


if __name__ == "__main__":
    main()
