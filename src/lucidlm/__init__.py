"""lucidlm: a GPT you can read end to end, and a tool to train, sample and evaluate your own.

The names below are imported when first used (PEP 562), so that `import lucidlm` and `lucidlm --help` do not
wait for PyTorch."""

from lucidlm.lazy import names_from

__version__ = "0.1.0"
_HOMES = {
    "GPT": "lucidlm.model",
    "GPTConfig": "lucidlm.model",
    "PRESETS": "lucidlm.run_config",
    "RunConfig": "lucidlm.run_config",
    "TrainConfig": "lucidlm.run_config",
    "LucidError": "lucidlm.errors",
    "SamplingConfig": "lucidlm.decode",
    "generate_text": "lucidlm.generate",
    "CharTokenizer": "lucidlm.tokenizers",
    "Tokenizer": "lucidlm.tokenizers",
    "WordTokenizer": "lucidlm.tokenizers",
    "load_tokenizer": "lucidlm.tokenizers",
    "load_model": "lucidlm.load",
    "train": "lucidlm.train",
}
__all__ = sorted(_HOMES)

__getattr__ = names_from(__name__, _HOMES)
