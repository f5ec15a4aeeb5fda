"""The PyTorch GPT."""

from lucidlm.model.config import GPTConfig
from lucidlm.model.gpt import GPT
from lucidlm.model.kv_cache import KVCache

__all__ = ["GPT", "GPTConfig", "KVCache"]
