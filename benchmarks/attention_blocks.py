"""Written-out causal attention with its queries in 1, 2, 4 or 8 blocks: forward and backward, compiled.

Under bf16 on the CPU, lucidlm writes attention out as two products and a softmax (`model/kernels.py`), and from
two blocks of `CAUSAL_BLOCK_QUERIES` queries on it takes the queries in blocks, each block against the keys up
to its own end (`causal_attention_in_blocks`). More blocks skip more of the masked (T, T) work, (n - 1) / 2n of
it, but run smaller products; this times where the balance lies. The four block counts alternate, round after
round, and each figure is the median of the rounds' medians. fp32 rows time the same written-out path, which
training in fp32 does not take (it calls PyTorch's flash attention): on a CPU without bf16 units they stand in
for one with them, where the products are fast beside the softmax.

    python benchmarks/attention_blocks.py        (about 6 minutes on 2 cores)
"""

from __future__ import annotations

import statistics

import torch
from common import machine, seconds, write_results

from lucidlm.device import cpu_bf16_flag
from lucidlm.model.kernels import CAUSAL_BLOCK_QUERIES, causal_attention_in_blocks

SHAPES = [  # (name, batch, heads, tokens); head size 64
    ("10.6M config (batch 16, 6 heads)", 16, 6, 256),
    ("shakespeare-char preset (batch 12, 2 heads)", 12, 2, 256),
    ("batch 8, 6 heads, 128 tokens", 8, 6, 128),
    ("batch 8, 6 heads, 512 tokens", 8, 6, 512),
]
BLOCKS = (1, 2, 4, 8)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
ROUNDS, REPEATS = 5, 10


def forward_backward_ms(attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> float:
    return seconds(lambda: attend(q, k, v).sum().backward(), REPEATS) * 1e3


def time_blocks(batch: int, heads: int, tokens: int, dtype: torch.dtype) -> dict:
    torch._dynamo.reset()  # each shape and dtype compiles afresh, so no run falls back to eager on a full cache
    attend = {n: torch.compile(lambda q, k, v, n=n: causal_attention_in_blocks(q, k, v, n)) for n in BLOCKS}
    q, k, v = (torch.randn(batch, heads, tokens, 64, dtype=dtype, requires_grad=True) for _ in range(3))
    for n in BLOCKS:
        forward_backward_ms(attend[n], q, k, v)  # the compile, then a warm run
    rounds: dict[int, list[float]] = {n: [] for n in BLOCKS}
    for _ in range(ROUNDS):
        for n in BLOCKS:
            rounds[n].append(forward_backward_ms(attend[n], q, k, v))
    return {n: round(statistics.median(times), 2) for n, times in rounds.items()}


def main() -> None:
    rows = []
    for name, batch, heads, tokens in SHAPES:
        for dtype_name, dtype in DTYPES.items():
            ms = time_blocks(batch, heads, tokens, dtype)
            chosen = tokens // CAUSAL_BLOCK_QUERIES
            rows.append({"shape": name, "tokens": tokens, "dtype": dtype_name, "ms": ms, "chosen": chosen})
    bf16_units = cpu_bf16_flag() or "none"
    lines = [
        "## Causal attention in query blocks (`benchmarks/attention_blocks.py`)",
        "",
        f"{machine()['threads']} threads; the CPU's bf16 flag: {bf16_units}. Written-out causal attention "
        "(head size 64), forward and backward, compiled, ms per call (medians of alternating rounds); in bold the "
        f"block count lucidlm takes (blocks of {CAUSAL_BLOCK_QUERIES} queries).",
        "",
        "| shape | dtype | " + " | ".join(f"{n} block{'s' if n > 1 else ''}" for n in BLOCKS) + " |",
        "|---|---|" + "---:|" * len(BLOCKS),
    ]
    for row in rows:
        cells = [f"**{ms:.1f}**" if n == row["chosen"] else f"{ms:.1f}" for n, ms in row["ms"].items()]
        lines.append(f"| {row['shape']} | {row['dtype']} | " + " | ".join(cells) + " |")
    results = {"machine": {**machine(), "bf16_flag": bf16_units}, "runs": rows}
    write_results("attention_blocks", results, "\n".join(lines))


if __name__ == "__main__":
    main()
