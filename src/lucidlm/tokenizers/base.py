"""The interface every tokenizer follows: text in, token ids out, and back.

A tokenizer is learned from text (`train`), turns text into ids (`encode`) and ids into text (`decode`), and is
saved as `tokenizer.json` next to the token files and in every run directory, so that a checkpoint always
travels with the vocabulary it was trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from lucidlm.errors import TokenizerError


class Tokenizer:
    kind: ClassVar[str] = ""
    unknown_token: ClassVar[str | None] = None  # the token that stands for what the vocabulary lacks, if any
    registry: ClassVar[dict[str, type[Tokenizer]]] = {}

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

    @property
    def eos_ids(self) -> list[int]:
        """The tokens that end a text (generation stops at them); none by default."""
        return []

    @property
    def chat_template(self) -> str | None:
        """The Jinja2 chat template that comes with the tokenizer (an imported model's), if any."""
        return None

    def token_text(self, key: str) -> str | None:
        """The text of a named special token ("bos_token", "eos_token") that a chat template writes, if any."""
        return None

    def prompt_ids(self, text: str) -> list[int]:
        """The ids of a prompt; a tokenizer whose model expects special tokens around it (an imported one) adds them."""
        return self.encode(text)

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


def tokenizer_kind(data: Any) -> str | None:
    """lucidlm's own char and word files say {"type": ...}; its BPE writes the Hugging Face format with its own
    split patterns ("bpe"); any other Hugging Face tokenizer.json is an imported one ("hf")."""
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    if isinstance(model, dict):
        from lucidlm.tokenizers.bpe import BPETokenizer

        return "bpe" if BPETokenizer.is_own_format(data) else "hf"
    kind = data.get("type")
    return kind if isinstance(kind, str) else None


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a `tokenizer.json` written by `Tokenizer.save`, whatever its kind."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"no tokenizer at {path}: prepare data with `lucidlm data prepare`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{path} is not valid JSON ({exc}); prepare the data again") from None
    kind = tokenizer_kind(data)
    if kind not in Tokenizer.registry:
        known = ", ".join(sorted(Tokenizer.registry))
        raise TokenizerError(f"{path}: unknown tokenizer type {kind!r} (known: {known})")
    if kind == "hf":  # with the tokenizer_config.json saved beside it
        from lucidlm.tokenizers.hf import load_hf_directory_tokenizer

        return load_hf_directory_tokenizer(path.parent)
    try:
        return Tokenizer.registry[kind].from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenizerError(f"{path}: malformed {kind} tokenizer ({exc}); prepare the data again") from None
