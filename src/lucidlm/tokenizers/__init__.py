"""Tokenizers: text to token ids and back. `HFTokenizer` is imported when first used: it runs Hugging Face's
`tokenizers` (a compiled extension), which the from-scratch ones do not need, and which a course page's
WebAssembly Python does not have."""

from lucidlm.lazy import names_from
from lucidlm.tokenizers.base import Tokenizer
from lucidlm.tokenizers.bpe import BPETokenizer
from lucidlm.tokenizers.char import CharTokenizer
from lucidlm.tokenizers.loading import load_tokenizer
from lucidlm.tokenizers.word import WordTokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "HFTokenizer", "Tokenizer", "WordTokenizer", "load_tokenizer"]

__getattr__ = names_from(__name__, {"HFTokenizer": "lucidlm.tokenizers.hf"})
