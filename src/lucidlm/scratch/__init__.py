"""lucidlm.scratch: the whole GPT in NumPy, every backward pass written by hand."""

from lucidlm.scratch.bridge import from_torch, to_torch
from lucidlm.scratch.gpt import KVCache, NumpyGPT, check_supported
from lucidlm.scratch.optim import AdamW, clip_grad_norm

__all__ = ["AdamW", "KVCache", "NumpyGPT", "check_supported", "clip_grad_norm", "from_torch", "to_torch"]
