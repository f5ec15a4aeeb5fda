"""Shared by the benchmark scripts: the benchmark corpus, the machine's sgemm peak, a folder served over HTTP for
the browser benchmarks, and writing results.

Each script writes benchmarks/results/NAME.json and replaces its own section of docs/benchmarks.md, between
`<!-- NAME:start -->` and `<!-- NAME:end -->`, so the table always shows the latest run of every figure.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

ROOT = Path(__file__).resolve().parent.parent
TINY_SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
T = TypeVar("T")
WORK = Path(os.environ.get("LUCIDLM_BENCH_DIR", ROOT / "build" / "bench"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
sys.path.insert(0, str(ROOT))  # for the page tests' local web server, which the browser benchmarks use too
from tests.web.conftest import serving as serving  # noqa: E402  (re-exported)


def tiny_shakespeare_data() -> Path:
    """Tiny Shakespeare as char token files, split as nanoGPT splits it (first 90% train, last 10% val)."""
    from lucidlm.data import Source, prepare

    if not TINY_SHAKESPEARE.exists():
        raise SystemExit(f"the benchmark corpus {TINY_SHAKESPEARE} is missing")
    out = WORK / "tinyshakespeare-char"
    if not (out / "meta.json").exists():
        prepare([Source(TINY_SHAKESPEARE, "tinyshakespeare.txt")], out, "char", progress=False)
    return out


def seconds(work: Callable[[], object], repeats: int) -> float:
    """The mean wall time of one call of `work` over `repeats` calls."""
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - started) / repeats


def sgemm_peak(size: int = 2048, repeats: int = 20, dtype: torch.dtype = torch.float32) -> float:
    """The best matmul rate this process reaches in `dtype` (fp32 by default), in FLOP/s: the ceiling MFU is
    measured against, for training in that dtype."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def peak_around(work: Callable[[], T], dtype: torch.dtype = torch.float32) -> tuple[T, float]:
    """Run `work` between two peak measurements in `dtype`; return its result and the higher peak. A shared VM's
    speed drifts by a third within minutes, so the ceiling is measured next to the work it is compared with."""
    before = sgemm_peak(dtype=dtype)
    result = work()
    return result, max(before, sgemm_peak(dtype=dtype))


def cpu_model() -> str:
    """The CPU's model name, as lscpu shows it (from /proc/cpuinfo)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def machine_line() -> str:
    """One sentence naming the CPU a table's figures come from: its model, AVX-512 or not, bf16 units or not."""
    from lucidlm.device import cpu_bf16_flag

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    avx512 = "with AVX-512" if " avx512f" in flags else "without AVX-512"
    bf16 = cpu_bf16_flag()
    units = f"bf16 units ({bf16})" if bf16 else "no bf16 units"
    return f"Machine: {cpu_model()}, {avx512}, {units}; {torch.get_num_threads()} threads."


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_results(name: str, results: dict, table: str) -> None:
    results_dir = ROOT / "benchmarks" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{table.strip()}\n{end}"
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)
    print(table)
