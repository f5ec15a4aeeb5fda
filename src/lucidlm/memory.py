"""The C library's malloc: one process-wide setting that both training backends want, and a trim for loading."""

from __future__ import annotations

import ctypes
import functools

# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.cache
def c_library() -> ctypes.CDLL:
    """The C library this process already runs on (opened once: LazyWeights trims before every tensor)."""
    return ctypes.CDLL(None)


@functools.cache
def keep_freed_memory() -> bool:
    """Ask the C library's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A training step allocates its activations afresh every step (every NumPy operation returns a new array;
    PyTorch's CPU tensors come from malloc too). By default glibc gives a freed block of more than 128 KiB
    straight back to the kernel (munmap, or trimming the top of the heap), and the next step's block of the same
    size is faulted in again, one zeroed 4 KiB page at a time: thousands of page faults per small step, a large
    part of the NumPy backend's time (docs/benchmarks.md). With both thresholds raised, freed blocks are reused
    and a step makes next to none. This is process-wide (the process then keeps
    its peak heap); the trainer and the NumPy GPT call it. Returns False where the C library has no mallopt
    (macOS, musl) or cannot be reached (WebAssembly, where a course page runs the NumPy GPT), which changes
    nothing else.
    """
    try:
        libc = c_library()
    except OSError:  # ctypes without a C library to open: wasm32-wasi
        return False
    if not hasattr(libc, "mallopt"):
        return False
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit machines; bigger blocks are still mapped.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))


def return_freed_memory() -> None:
    """Hand the heap's free pages back to the kernel (glibc's malloc_trim; nothing where there is none).

    After a large block is freed glibc raises its mmap threshold, so later blocks come from the heap, and what
    is freed inside the heap stays in the process. Converting a model's tensors one at a time (export/hf.py's
    LazyWeights) leaves such gaps behind each: a 500 MB GPT-2 grew the process by 1.35x its weights at load,
    or by 1.17x with a trim before each tensor."""
    libc = c_library()
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
