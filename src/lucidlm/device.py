"""Which device to run on, and the numeric precision that goes with it."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from lucidlm.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this PyTorch sees no CUDA GPU; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for but MPS is not available; use --device cpu")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16")
# /proc/cpuinfo flags of CPUs with bf16 matrix products in hardware: Intel's AMX and AVX512-BF16 (AMD's Zen 4
# and later have the latter), Arm's BF16 extension (Graviton 3, Apple M2 and later under Linux)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


@functools.cache
def cpu_bf16_flag(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first of CPU_BF16_FLAGS this CPU reports, or None (no such flag, or no /proc/cpuinfo to read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags = {
        word
        for line in text.splitlines()
        if line.lower().startswith(("flags", "features"))
        for word in line.split(":", 1)[-1].split()
    }
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


def training_precision(device: torch.device, asked: str = "auto") -> tuple[str, str]:
    """The precision of training's products on `device`, "bf16" or "fp32", and why. `auto` takes bf16 on CUDA
    and on CPUs with bf16 units (there the products run 2-4x faster: docs/benchmarks.md), fp32 elsewhere.
    Master weights, optimizer state and the loss stay fp32 whichever it is (autocast)."""
    if asked != "auto":
        return asked, f"dtype={asked} was asked for"
    if device.type == "cuda":
        return "bf16", "CUDA"
    if device.type == "cpu":
        flag = cpu_bf16_flag()
        if flag is not None:
            return "bf16", f"the CPU has bf16 units ({flag})"
        return "fp32", f"the CPU reports no bf16 units (none of {', '.join(CPU_BF16_FLAGS)})"
    return "fp32", f"{device.type} trains in fp32"


def autocast(device: torch.device, precision: str | None = None) -> contextlib.AbstractContextManager:
    """bf16 autocast (matmuls in bf16, reductions in fp32) when `precision` is "bf16", or by default on CUDA;
    full fp32 otherwise."""
    if precision == "bf16" or (precision is None and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
