"""The PyTorch GPT. `GPT` and `KVCache` are imported when first used, so that reading a configuration
(`lucidlm.model.config`, what `lucidlm --help` lists) does not wait for PyTorch."""

from lucidlm.lazy import names_from
from lucidlm.model.config import GPTConfig

_HOMES = {"GPT": "lucidlm.model.gpt", "KVCache": "lucidlm.model.kv_cache"}
__all__ = ["GPT", "GPTConfig", "KVCache"]

__getattr__ = names_from(__name__, _HOMES)
