"""The interface every tokenizer follows: text in, token ids out, and back.

A tokenizer is learned from text (`train`), turns text into ids (`encode`) and ids into text (`decode`), and is
saved as `tokenizer.json` next to the token files and in every run directory, so that a checkpoint always
travels with the vocabulary it was trained on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from lucidlm.errors import TokenizerError

# The special token that ends a turn of lucidlm's chat template (chat/template.py): a tokenizer that holds it
# ends generated text there.
END_OF_TURN = "<|end|>"


class Tokenizer:
    kind: ClassVar[str] = ""
    unknown_token: ClassVar[str | None] = None  # the token that stands for what the vocabulary lacks, if any
    registry: ClassVar[dict[str, type[Tokenizer]]] = {}
    # Special tokens (text -> id), numbered after the ordinary vocabulary; every tokenizer sets its own.
    # `encode_with_specials` reads their texts as those tokens (what a rendered template needs); `encode_ordinary`
    # never does, so that text from outside cannot forge a turn (chat/template.py's SpecialTextGuard).
    special_tokens: dict[str, int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # a subclass that only customises a tokenizer does not replace it
            Tokenizer.registry[cls.kind] = cls

    # --- what each tokenizer implements ---------------------------------------------------------------
    @classmethod
    def train(cls, chunks: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
        """Learn a vocabulary from an iterable of text chunks (streamed: the text is never held whole)."""
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def unknown_symbols(self, text: str) -> list[str]:
        """The pieces of `text` this vocabulary cannot represent, in order of first appearance."""
        raise NotImplementedError

    def with_special_tokens(self, texts: Iterable[str]) -> Tokenizer:
        """This tokenizer with `texts` added as special tokens after the ones it has (to fine-tune a base
        model for chat); the ids it had stay as they were."""
        raise TokenizerError(f"a {self.kind} tokenizer takes no new special tokens")

    def extends(self, other: Tokenizer) -> bool:
        """Whether this tokenizer is `other`, or `other` with special tokens added (a base model's tokenizer
        after fine-tuning for chat): then it reads every text as `other` does, with the same ids."""
        added = [text for text in self.special_tokens if text not in other.special_tokens]
        try:
            return (other.with_special_tokens(added) if added else other).to_dict() == self.to_dict()
        except TokenizerError:
            return False

    @property
    def eos_ids(self) -> list[int]:
        """The tokens that end a text (generation stops at them): the end of a turn, where the tokenizer has it."""
        return [self.special_tokens[END_OF_TURN]] if END_OF_TURN in self.special_tokens else []

    def encode_with_specials(self, text: str) -> list[int]:
        """Like `encode`, but the texts of special tokens become those tokens (what a rendered template needs)."""
        if not self.special_tokens:
            return self.encode(text)
        alternatives = "|".join(re.escape(s) for s in sorted(self.special_tokens, key=len, reverse=True))
        ids: list[int] = []
        for part in re.split(f"({alternatives})", text):
            if part in self.special_tokens:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode(part))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """The ids of `text` read as text: a special token's text in it is encoded like any other text. (The char
        and word tokenizers, and a Hub one, never read special tokens from text: this is their `encode`; BPE's
        `encode` refuses them unless told, as tiktoken's does.)"""
        return self.encode(text)

    def prompt_ids(self, text: str) -> list[int]:
        """The ids of a prompt, read as text (`encode_ordinary`); a tokenizer whose model expects special tokens
        around it (an imported one) adds them."""
        return self.encode_ordinary(text)

    def to_dict(self) -> dict[str, Any]:
        """The content of tokenizer.json."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        raise NotImplementedError

    def encode_stream(self, pieces: Iterable[str], processes: int = 1) -> Iterator[list[int]]:
        """Encode the pieces of a data file, in order. (BPE takes special-token strings there as special tokens
        and can spread the work over `processes` processes.)"""
        for piece in pieces:
            yield self.encode(piece)

    @classmethod
    def safe_cut(cls, text: str) -> int:
        """Where a streamed chunk may be cut so that no token straddles the cut (default: anywhere)."""
        return len(text)

    # --- shared -------------------------------------------------------------------------------------------
    def matches_file(self, path: str | os.PathLike) -> bool:
        """Whether the tokenizer.json at `path` describes this very tokenizer (same vocabulary, same merges)."""
        return json.loads(Path(path).read_text(encoding="utf-8")) == self.to_dict()

    def save(self, path: str | os.PathLike) -> None:
        """Write `tokenizer.json` atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)


def numbered_special_tokens(first_id: int, texts: Iterable[str]) -> dict[str, int]:
    """Special tokens numbered from `first_id` in order; a repeated text is an error."""
    texts = list(texts)
    if len(set(texts)) != len(texts) or not all(isinstance(t, str) and t for t in texts):
        raise ValueError("special tokens are distinct, non-empty strings")
    return {text: first_id + i for i, text in enumerate(texts)}


def added_tokens_json(special_tokens: dict[str, int]) -> list[dict[str, Any]]:
    """`added_tokens` of a Hugging Face tokenizer.json: each special token matched whole, never normalised."""
    return [
        {
            "id": index,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for text, index in special_tokens.items()
    ]


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Token ids for `prompt`. Symbols the vocabulary lacks are an error that lists them, except for a
    vocabulary with an unknown token (the word tokenizer's <unk>), which reads them as that token."""
    unknown = tokenizer.unknown_symbols(prompt)
    if unknown and tokenizer.unknown_token is None:
        shown = " ".join(repr(s) for s in unknown[:20])
        raise TokenizerError(
            f"the prompt contains {len(unknown)} symbol(s) the model's vocabulary lacks: {shown}; "
            "remove or replace them"
        )
    if not prompt:
        # An empty prompt starts from a newline, the most neutral start a text has, when the vocabulary has one.
        return tokenizer.prompt_ids("\n") if not tokenizer.unknown_symbols("\n") else [0]
    return tokenizer.prompt_ids(prompt)
