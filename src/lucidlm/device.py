"""Which device to run on, and the numeric precision that goes with it."""

from __future__ import annotations

import contextlib
import ctypes
import platform

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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (matmuls in bf16, reductions in fp32); full fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for the next allocation instead of handing it back to the kernel.

    By default glibc unmaps big freed blocks and trims the top of its heap, so a training step, which frees its
    activations and allocates them again the next step, page-faults the same memory back in every step: about 750
    faults and 7 ms of a 50 ms nanogpt-baby step on a 2-core VM (docs/benchmarks.md). With both thresholds raised
    the process keeps what it has used, as jemalloc and tcmalloc do. Returns False where the C library is not
    glibc (macOS, musl), which is left as it is.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit machines; bigger blocks are still mapped.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20) and libc.mallopt(M_TRIM_THRESHOLD, 2**30))
