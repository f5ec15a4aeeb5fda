"""Tokenizers: text to token ids and back."""

from lucidlm.tokenizers.base import Tokenizer
from lucidlm.tokenizers.bpe import BPETokenizer
from lucidlm.tokenizers.char import CharTokenizer
from lucidlm.tokenizers.hf import HFTokenizer
from lucidlm.tokenizers.loading import load_tokenizer
from lucidlm.tokenizers.word import WordTokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "HFTokenizer", "Tokenizer", "WordTokenizer", "load_tokenizer"]
