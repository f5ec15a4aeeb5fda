"""lucidlm: a GPT you can read end to end, and a tool to train, sample and evaluate your own."""

from lucidlm.config import PRESETS, RunConfig, TrainConfig
from lucidlm.errors import LucidError
from lucidlm.generate import SamplingConfig, generate_text
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import CharTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from lucidlm.train import load_model, train

__version__ = "0.1.0"
__all__ = [
    "GPT",
    "PRESETS",
    "CharTokenizer",
    "GPTConfig",
    "LucidError",
    "RunConfig",
    "SamplingConfig",
    "Tokenizer",
    "TrainConfig",
    "WordTokenizer",
    "generate_text",
    "load_model",
    "load_tokenizer",
    "train",
]
