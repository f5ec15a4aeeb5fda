"""Character-level tokenizer: every distinct character of the training text is one token.

The vocabulary is the sorted set of characters, so ids are stable for the same text (nanoGPT's
shakespeare_char does the same). A character outside the vocabulary cannot be encoded. Special tokens (a chat
template's turns) take the ids after the characters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lucidlm.errors import ConfigError, TokenizerError
from lucidlm.tokenizers.base import Tokenizer, numbered_special_tokens


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars: Iterable[str], special_tokens: Iterable[str] = ()):
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("a char vocabulary holds distinct single characters")
        self.char_to_id = {c: i for i, c in enumerate(self.chars)}
        self.special_tokens = numbered_special_tokens(len(self.chars), special_tokens)
        self.tokens = self.chars + list(self.special_tokens)  # id -> text, special tokens included

    def with_special_tokens(self, texts: Iterable[str]) -> CharTokenizer:
        return CharTokenizer(self.chars, [*self.special_tokens, *texts])

    @classmethod
    def train(cls, chunks: Iterable[str], vocab_size: int | None = None) -> CharTokenizer:
        if vocab_size is not None:
            raise ConfigError(
                "--vocab-size does not apply to the char tokenizer (its vocabulary is every "
                "character of the text); drop it or use --tokenizer word"
            )
        seen: set[str] = set()
        for chunk in chunks:
            seen.update(chunk)
        return cls(sorted(seen))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.char_to_id[c] for c in text]
        except KeyError:
            missing = " ".join(repr(c) for c in self.unknown_symbols(text))
            raise TokenizerError(f"characters not in the vocabulary: {missing}; remove them") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.tokens[i] for i in ids)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def unknown_symbols(self, text: str) -> list[str]:
        return list(dict.fromkeys(c for c in text if c not in self.char_to_id))

    def to_dict(self) -> dict[str, Any]:
        special = {"special_tokens": list(self.special_tokens)} if self.special_tokens else {}
        return {"type": self.kind, "version": 1, "vocab": self.chars, **special}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(data["vocab"], data.get("special_tokens", ()))
