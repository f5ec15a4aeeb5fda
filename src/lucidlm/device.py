"""Which device to run on, the numeric precision that goes with it, and whether training compiles."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
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


# `compile=auto` compiles runs at least this long: a shorter one does not win back the time the compile takes
# (docs/benchmarks.md measures it, cold cache and warm)
COMPILE_MIN_STEPS = 500
COMPILE_MIN_SECONDS = 60.0


def missing_compiler(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, or None when it can: Inductor writes C++ for the CPU
    and Triton for CUDA."""
    if device.type == "cpu":
        if not any(shutil.which(name) for name in (os.environ.get("CXX", "g++"), "g++", "clang++", "c++")):
            return "compiling for the CPU needs a C++ compiler (g++ or clang++)"
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "compiling for CUDA needs Triton (pip install triton)"
    return f"torch.compile is not used on {device.type}"


# The user's own choice, read at import: PyTorch writes its default (/tmp/torchinductor_USER) into the environment
# the first time anything asks, which making an optimizer does.
USERS_COMPILE_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def use_compile_cache() -> Path:
    """Inductor's on-disk cache under lucidlm's cache directory (unless TORCHINDUCTOR_CACHE_DIR says where):
    the compiled kernels of a shape outlive the run, and its next run starts in seconds instead of tens."""
    from lucidlm.data.corpus import cache_dir

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = USERS_COMPILE_CACHE or str(cache_dir() / "inductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def training_compile(device: torch.device, asked: str, max_steps: int, time_budget: float | None) -> tuple[bool, str]:
    """Whether training compiles the model's blocks, and why. `auto` compiles where a compiler is there and the
    run is long enough to win the compile back; `true` insists (an error where no compiler is)."""
    if asked == "false":
        return False, "compile=false was asked for"
    missing = missing_compiler(device)
    if asked == "true":
        if missing is not None:
            raise ConfigError(f"{missing}; install it or set compile=false")
        return True, "compile=true was asked for"
    if missing is not None:
        return False, missing
    budget = f" or {time_budget:g} s" if time_budget is not None else ""
    if max_steps < COMPILE_MIN_STEPS or (time_budget is not None and time_budget < COMPILE_MIN_SECONDS):
        return False, f"a run of {max_steps} steps{budget} does not win back a compile"
    return True, f"a run of up to {max_steps} steps{budget} wins back the compile"
