"""lucidlm: a GPT you can read end to end, and a tool to train, sample and evaluate your own.

The names below are imported when first used (PEP 562), so that `import lucidlm` and `lucidlm --help` do not
wait for PyTorch."""

import importlib

__version__ = "0.1.0"
_HOMES = {
    "GPT": "lucidlm.model",
    "GPTConfig": "lucidlm.model",
    "PRESETS": "lucidlm.config",
    "RunConfig": "lucidlm.config",
    "TrainConfig": "lucidlm.config",
    "LucidError": "lucidlm.errors",
    "SamplingConfig": "lucidlm.generate",
    "generate_text": "lucidlm.generate",
    "CharTokenizer": "lucidlm.tokenizers",
    "Tokenizer": "lucidlm.tokenizers",
    "WordTokenizer": "lucidlm.tokenizers",
    "load_tokenizer": "lucidlm.tokenizers",
    "load_model": "lucidlm.load",
    "train": "lucidlm.train",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'lucidlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
