"""Loading a `tokenizer.json` by its kind: the one module that knows every subclass, so that the base class
(base.py) imports none of them, as minbpe's does not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lucidlm.errors import TokenizerError
from lucidlm.inputs import JSON_LIMIT, parse_json, read_text
from lucidlm.tokenizers.base import Tokenizer
from lucidlm.tokenizers.bpe import BPETokenizer
from lucidlm.tokenizers.char import CharTokenizer  # noqa: F401  (registers the kind "char")
from lucidlm.tokenizers.word import WordTokenizer  # noqa: F401  (registers the kind "word")


def tokenizer_kind(data: Any) -> str | None:
    """lucidlm's own char and word files say {"type": ...}; its BPE writes the Hugging Face format with its own
    split patterns ("bpe"); any other Hugging Face tokenizer.json is an imported one ("hf")."""
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    if isinstance(model, dict):
        return "bpe" if BPETokenizer.is_own_format(data) else "hf"
    kind = data.get("type")
    return kind if isinstance(kind, str) else None


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a `tokenizer.json` written by `Tokenizer.save`, whatever its kind."""
    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"no tokenizer at {path}: prepare data with `lucidlm data prepare`")
    try:
        data = parse_json(read_text(path, JSON_LIMIT, TokenizerError, "prepare the data again"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise TokenizerError(f"{path} is {exc}; prepare the data again") from None
    kind = tokenizer_kind(data)
    if kind == "hf":  # with the tokenizer_config.json saved beside it, run by Hugging Face's `tokenizers`
        from lucidlm.tokenizers.hf import load_hf_directory_tokenizer

        return load_hf_directory_tokenizer(path.parent)
    if kind not in Tokenizer.registry:
        known = ", ".join(sorted({*Tokenizer.registry, "hf"}))
        raise TokenizerError(f"{path}: unknown tokenizer type {kind!r} (known: {known})")
    try:
        return Tokenizer.registry[kind].from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenizerError(f"{path}: malformed {kind} tokenizer ({exc}); prepare the data again") from None
