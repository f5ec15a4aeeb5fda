"""The PyTorch GPT. `GPT` and `KVCache` are imported when first used, so that reading a configuration
(`lucidlm.model.config`, what `lucidlm --help` lists) does not wait for PyTorch."""

import importlib

from lucidlm.model.config import GPTConfig

_HOMES = {"GPT": "lucidlm.model.gpt", "KVCache": "lucidlm.model.kv_cache"}
__all__ = ["GPT", "GPTConfig", "KVCache"]


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'lucidlm.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
