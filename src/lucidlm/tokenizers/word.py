"""Word-level tokenizer: words, single punctuation marks and whitespace runs are the tokens.

Keeping whitespace runs as tokens makes decoding exact: `decode(encode(s)) == s` for any text whose words are
all in the vocabulary. With `vocab_size`, only the most frequent tokens are kept and the rest become `<unk>`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from lucidlm.errors import ConfigError
from lucidlm.tokenizers.base import Tokenizer, numbered_special_tokens

WORD_PATTERN = re.compile(r"\w+|\s+|[^\w\s]")
UNKNOWN = "<unk>"


class WordTokenizer(Tokenizer):
    kind = "word"
    unknown_token = UNKNOWN

    def __init__(self, vocab: Iterable[str], special_tokens: Iterable[str] = ()):
        self.vocab = list(vocab)
        if not self.vocab or self.vocab[0] != UNKNOWN:
            raise ValueError(f"a word vocabulary starts with {UNKNOWN}")
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.special_tokens = numbered_special_tokens(len(self.vocab), special_tokens)
        self.tokens = self.vocab + list(self.special_tokens)  # id -> text, special tokens included

    def with_special_tokens(self, texts: Iterable[str]) -> WordTokenizer:
        return WordTokenizer(self.vocab, [*self.special_tokens, *texts])

    @staticmethod
    def split(text: str) -> list[str]:
        return WORD_PATTERN.findall(text)

    @classmethod
    def train(cls, chunks: Iterable[str], vocab_size: int | None = None) -> WordTokenizer:
        if vocab_size is not None and vocab_size < 2:
            raise ConfigError(f"--vocab-size {vocab_size} is too small for the word tokenizer; use 2 or more")
        counts: Counter[str] = Counter()
        for chunk in chunks:
            counts.update(cls.split(chunk))
        # Most frequent first; ties broken alphabetically so the same text always gives the same ids.
        ranked = sorted(counts, key=lambda t: (-counts[t], t))
        if vocab_size is not None:
            ranked = ranked[: vocab_size - 1]
        return cls([UNKNOWN, *ranked])

    def encode(self, text: str) -> list[int]:
        return [self.token_to_id.get(t, 0) for t in self.split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.tokens[i] for i in ids)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def unknown_symbols(self, text: str) -> list[str]:
        return list(dict.fromkeys(t for t in self.split(text) if t not in self.token_to_id))

    @classmethod
    def safe_cut(cls, text: str) -> int:
        # Cut before the last whitespace run: neither a word nor a run of spaces is split across chunks.
        match = re.search(r"\s+\S*$", text)
        return match.start() if match else 0

    def to_dict(self) -> dict[str, Any]:
        special = {"special_tokens": list(self.special_tokens)} if self.special_tokens else {}
        return {"type": self.kind, "version": 1, "unk_token": UNKNOWN, "vocab": self.vocab, **special}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        return cls(data["vocab"], data.get("special_tokens", ()))
