"""The MFU a training step would reach if everything but its matrix products took no time.

Every matrix product of one forward and backward pass (per linear layer: the forward product and, backward, the
gradients of the input and of the weight; the head; attention's two batched products, three times) is timed
alone with the step's exact shapes, best of 5 blocks. Their FLOPs (nanoGPT's formula, as in train_speed.py)
over their summed time, divided by the sgemm peak measured in the same run, is the ceiling: what is left of
the MFU target above it cannot come from less Python or fewer element-wise passes.

    python benchmarks/gemm_ceiling.py        (about a minute)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from common import machine, peak_around, write_results


@dataclass
class Shape:
    name: str
    n_layer: int
    n_embd: int
    n_head: int
    block_size: int
    batch_size: int
    mfu_target: float  # issue 6's
    vocab_size: int = 65

    @property
    def mlp_hidden(self) -> int:
        return 4 * self.n_embd


SHAPES = [
    Shape("nanogpt-baby", n_layer=4, n_embd=128, n_head=4, block_size=64, batch_size=12, mfu_target=0.70),
    Shape("10.6M (6x384, block 256)", n_layer=6, n_embd=384, n_head=6, block_size=256, batch_size=16, mfu_target=0.85),
]


def product_seconds(a_shape: tuple[int, ...], b_shape: tuple[int, ...], repeats: int = 30) -> float:
    """Seconds for one (batched) matrix product of these shapes: the best of 5 blocks of `repeats`."""
    a, b = torch.randn(*a_shape), torch.randn(*b_shape)
    multiply = torch.bmm if a.dim() == 3 else torch.mm
    for _ in range(3):
        multiply(a, b)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            multiply(a, b)
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def linear_seconds(rows: int, fan_in: int, fan_out: int) -> float:
    """Forward (x @ W), backward to the input (dy @ W^T) and to the weight (dy^T @ x)."""
    forward = product_seconds((rows, fan_in), (fan_in, fan_out))
    input_grad = product_seconds((rows, fan_out), (fan_out, fan_in))
    weight_grad = product_seconds((fan_out, rows), (rows, fan_in))
    return forward + input_grad + weight_grad


def ceiling(shape: Shape) -> dict:
    C, T, L = shape.n_embd, shape.block_size, shape.n_layer
    rows, heads, head_size = shape.batch_size * T, shape.batch_size * shape.n_head, C // shape.n_head
    linears = [(C, 3 * C), (C, C), (C, shape.mlp_hidden), (shape.mlp_hidden, C)]  # qkv, proj, mlp in, mlp out
    layer = sum(linear_seconds(rows, fan_in, fan_out) for fan_in, fan_out in linears)
    # scores Q K^T and the weighted sum of values; each has two products in the backward pass
    attention = 3 * (
        product_seconds((heads, T, head_size), (heads, head_size, T))
        + product_seconds((heads, T, T), (heads, T, head_size))
    )
    seconds = L * (layer + attention) + linear_seconds(rows, C, shape.vocab_size)
    params = L * (4 * C * C + 2 * C * shape.mlp_hidden) + shape.vocab_size * C  # weights of the products above
    flops = (6 * params + 12 * L * shape.n_head * head_size * T) * rows
    return {
        "config": shape.name,
        "gemm_seconds": seconds,
        "gemm_flops_per_s": flops / seconds,
        "mfu_target": shape.mfu_target,
    }


def main() -> None:
    rows, peak = peak_around(lambda: [ceiling(shape) for shape in SHAPES])
    for row in rows:
        row["mfu_ceiling"] = round(row["gemm_flops_per_s"] / peak, 3)
    lines = [
        "## The matrix products alone (`benchmarks/gemm_ceiling.py`)",
        "",
        f"Each training step's matrix products timed alone, with its shapes, on {machine()['threads']} threads; "
        f"fp32 sgemm peak (the higher of two measurements, before and after) {peak / 1e9:.0f} GFLOP/s.",
        "",
        "| config | products per step | GFLOP/s | MFU if nothing else took time | issue 6's target |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['gemm_seconds'] * 1000:.1f} ms | {row['gemm_flops_per_s'] / 1e9:.0f} | "
            f"{row['mfu_ceiling']:.0%} | {row['mfu_target']:.0%} |"
        )
    lines += [
        "",
        "Where the ceiling is above the target, the products are fast enough on their own, and the gap to the "
        "target is the time spent around them: element-wise passes, the optimizer, Python, and products running "
        "slower inside a step than alone (caches shared with everything else).",
    ]
    results = {"machine": machine(), "sgemm_peak_gflops": round(peak / 1e9, 1), "runs": rows}
    write_results("gemm_ceiling", results, "\n".join(lines))


if __name__ == "__main__":
    main()
