"""One process-wide setting for the C library's malloc, which both training engines want."""

from __future__ import annotations

import ctypes
import functools

# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.cache
def keep_freed_memory() -> bool:
    """Ask the C library's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A training step allocates its activations afresh every step (every NumPy operation returns a new array;
    PyTorch's CPU tensors come from malloc too). By default glibc gives a freed block of more than 128 KiB
    straight back to the kernel (munmap, or trimming the top of the heap), and the next step's block of the same
    size is faulted in again, one zeroed 4 KiB page at a time: about 11,000 page faults per nanogpt-baby step in
    the NumPy engine (a third of its time) and about 1,000 in PyTorch's (7 ms of 55). With both thresholds
    raised, freed blocks are reused and a step makes next to none. This is process-wide (the process then keeps
    its peak heap); the trainer and the NumPy GPT call it. Returns False where the C library has no mallopt
    (macOS, musl), which changes nothing else.
    """
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "mallopt"):
        return False
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit machines; bigger blocks are still mapped.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))
