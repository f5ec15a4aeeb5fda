"""A tokenizer imported from the Hugging Face Hub, run by Hugging Face `tokenizers` itself.

A Hub model's tokenizer.json can hold any of `tokenizers`' normalizers, pre-tokenizers, models and
post-processors; the reference implementation runs it exactly, where a copy would differ at the edges.
lucidlm's own BPE (bpe.py) stays the one written from scratch: it is what the lessons teach and what learns
new vocabularies. This one only wraps a file, behind the same `Tokenizer` interface, and is saved unchanged
into the runs that start from it (tokenizer.json), with the settings of the Hub directory that are not in that
file (tokenizer_config.json: the special tokens, whether a prompt starts with BOS, the chat template).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tokenizers

from lucidlm.errors import TokenizerError
from lucidlm.inputs import JSON_LIMIT, parse_json, read_text
from lucidlm.tokenizers.base import END_OF_TURN, Tokenizer, added_tokens_json

# the keys of tokenizer_config.json that lucidlm uses, kept with the tokenizer in a run
CONFIG_KEYS = ("bos_token", "eos_token", "add_bos_token", "chat_template")


class HFTokenizer(Tokenizer):
    kind = "hf"

    def __init__(self, data: dict[str, Any], config: dict[str, Any] | None = None, eos_ids: Iterable[int] = ()):
        try:
            self.tokenizer = tokenizers.Tokenizer.from_str(json.dumps(data))
            # Text is read as text: special tokens' texts in it are split like any other (transformers'
            # split_special_tokens); only a rendered chat template's own tokens go through `self.tokenizer`.
            self.text_tokenizer = tokenizers.Tokenizer.from_str(json.dumps(data))
            self.text_tokenizer.encode_special_tokens = True
        except Exception as exc:  # tokenizers raises its own Exception type for a file it cannot read
            raise TokenizerError(f"Hugging Face tokenizers cannot read this tokenizer.json ({exc})") from None
        self.data, self.config = data, {k: v for k, v in (config or {}).items() if k in CONFIG_KEYS}
        self.special_tokens = {t["content"]: t["id"] for t in data.get("added_tokens") or [] if t.get("special")}
        self.eos = list(eos_ids)
        if not self.eos and isinstance(self.token_text("eos_token"), str):
            eos = self.tokenizer.token_to_id(self.token_text("eos_token"))
            self.eos = [] if eos is None else [eos]

    def token_text(self, key: str) -> str | None:
        """The text of a special token named in tokenizer_config.json (a string, or an AddedToken dict)."""
        value = self.config.get(key)
        return value.get("content") if isinstance(value, dict) else value

    @property
    def hub_chat_template(self) -> str | None:
        """The Jinja2 chat template that came in tokenizer_config.json, if any. Which template a model speaks is
        chat.template.chat_template's to say."""
        template = self.config.get("chat_template")
        if isinstance(template, list):  # several named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        return template or None

    def with_special_tokens(self, texts: Iterable[str]) -> HFTokenizer:
        """The same tokenizer.json with `texts` as added special tokens, numbered after the whole vocabulary."""
        texts = list(texts)
        new = {text: self.vocab_size + i for i, text in enumerate(texts)}
        data = {**self.data, "added_tokens": [*(self.data.get("added_tokens") or []), *added_tokens_json(new)]}
        return HFTokenizer(data, self.config, self.eos)

    def encode_with_specials(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    # --- the Tokenizer interface ------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """The ids of `text` alone, with no special tokens added (what data files hold), and none read from it."""
        return self.text_tokenizer.encode(text, add_special_tokens=False).ids

    def prompt_ids(self, text: str) -> list[int]:
        """The ids a prompt gets from `transformers.AutoTokenizer(text)`: the post-processor's special tokens
        (a BOS, for Llama 3) included; the text itself is read as text, as `encode` reads it."""
        return self.text_tokenizer.encode(text, add_special_tokens=True).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def eos_ids(self) -> list[int]:
        end = self.special_tokens.get(END_OF_TURN)
        return self.eos + ([end] if end is not None and end not in self.eos else [])

    def unknown_symbols(self, text: str) -> list[str]:
        """Pieces read as the unknown token, where the model has one (byte-level vocabularies have none)."""
        unknown = self.tokenizer.token_to_id(str(self.data.get("model", {}).get("unk_token") or ""))
        if unknown is None:
            return []
        encoding = self.text_tokenizer.encode(text, add_special_tokens=False)
        return list(
            dict.fromkeys(text[a:b] for i, (a, b) in zip(encoding.ids, encoding.offsets, strict=True) if i == unknown)
        )

    @classmethod
    def safe_cut(cls, text: str) -> int:
        # After the last newline that a non-space follows: no pre-tokenizer of the Hub's joins across that.
        match = re.search(r"\n(?=\S)[^\n]*$", text)
        return match.start() + 1 if match else 0

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HFTokenizer:
        return cls(data)

    def save(self, path: str | os.PathLike) -> None:
        """tokenizer.json as it came, and beside it the settings from tokenizer_config.json."""
        super().save(path)
        config = Path(path).with_name("tokenizer_config.json")
        tmp = config.with_name(config.name + ".tmp")
        tmp.write_text(json.dumps({**self.config, "eos_token_ids": self.eos}, ensure_ascii=False, indent=1))
        os.replace(tmp, config)


def read_tokenizer_file(path: Path) -> Any:
    """A tokenizer's JSON file, or a TokenizerError that says what is wrong with it."""
    if not path.exists():
        raise TokenizerError(f"{path.parent} has no {path.name}; lucidlm reads the fast (tokenizers) format")
    try:
        return parse_json(read_text(path, JSON_LIMIT, TokenizerError, "give a tokenizer in the tokenizers format"))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise TokenizerError(f"{path} is {exc}") from None


def load_hf_directory_tokenizer(directory: str | os.PathLike, eos_ids: Iterable[int] = ()) -> HFTokenizer:
    """The tokenizer of a Hub directory (tokenizer.json, tokenizer_config.json, chat_template.jinja) or of a
    run that started from one."""
    directory = Path(directory)
    data = read_tokenizer_file(directory / "tokenizer.json")
    config = {}
    if (directory / "tokenizer_config.json").exists():
        config = read_tokenizer_file(directory / "tokenizer_config.json")
    if (directory / "chat_template.jinja").exists():
        config["chat_template"] = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    eos = list(eos_ids) or config.get("eos_token_ids", [])
    return HFTokenizer(data, config, eos)
