"""Forward + backward time of the NumPy GPT (lucidlm.scratch) beside PyTorch eager, on the CPU, same run.

The nanogpt-baby shape (4 layers, 4 heads, 128 wide, block 64, batch 12, 65-token vocabulary), float32, the same
weights and batches in both. Target: the NumPy backend within 1.5x of PyTorch's time.

    python benchmarks/scratch_vs_torch.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import machine, write_results

from lucidlm.model import GPT, GPTConfig
from lucidlm.scratch import from_torch


def median_times(steps: dict, blocks: int = 3, per_block: int = 20) -> dict[str, float]:
    """Median seconds per step of each function. The functions run in alternating blocks, so that a noisy
    machine slows all of them alike, with a pause between blocks: PyTorch's OpenMP threads keep spinning for a
    moment after a step and would otherwise steal the cores from NumPy's BLAS threads."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(blocks):
        for name, step in steps.items():
            for _ in range(3):
                step()
            for _ in range(per_block):
                started = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - started)
            time.sleep(0.5)
    return {name: float(np.median(values)) for name, values in times.items()}


def main() -> None:
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    torch.manual_seed(0)
    torch_model = GPT(config)
    numpy_model = from_torch(torch_model)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (12, 64)), rng.integers(0, 65, (12, 64))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        torch_model.zero_grad(set_to_none=True)
        torch_model(tx, ty)[1].backward()

    def numpy_step():
        numpy_model.forward(x, y)
        numpy_model.backward()

    measured = median_times({"torch": torch_step, "numpy": numpy_step})
    torch_s, numpy_s = measured["torch"], measured["numpy"]
    results = {
        "machine": machine(),
        "config": config.to_dict(),
        "batch": [12, 64],
        "torch_ms": round(torch_s * 1e3, 2),
        "numpy_ms": round(numpy_s * 1e3, 2),
        "ratio": round(numpy_s / torch_s, 3),
    }
    table = f"""## NumPy backend beside PyTorch (`benchmarks/scratch_vs_torch.py`)

Forward + backward of one nanogpt-baby batch (12 x 64 tokens), float32, CPU, median of 60 steps
each, in alternating blocks, same run.

| backend | ms per step | ratio |
|---|---:|---:|
| PyTorch eager | {torch_s * 1e3:.1f} | 1.00 |
| lucidlm.scratch (NumPy, hand-written backward) | {numpy_s * 1e3:.1f} | {numpy_s / torch_s:.2f} |

Target: at most 1.5x PyTorch's time. What got the NumPy backend there: (B*T, C) matmuls rather than batched
ones, GELU through one exp, in-place softmax and GELU backward, a sort + reduceat embedding backward, and
`keep_freed_memory` (memory.py): glibc handed every freed activation back to the kernel and each step
faulted ~11,000 pages in again, a third of its time (ratio 1.44-1.61 in earlier sessions' runs, 1.10-1.36 in
6 runs after)."""
    write_results("scratch_vs_torch", results, table)


if __name__ == "__main__":
    main()
