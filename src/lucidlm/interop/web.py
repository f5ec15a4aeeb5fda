"""`lucidlm export --format web`: a trained model as a static folder that runs in the browser with nothing
installed: its forward pass, sampling and explainer in plain JavaScript (static/gpt.js, tokenizer.js,
explain.js), the weights as one float32 file.

    index.html, explain.js, gpt.js, tokenizer.js, lensview.js, style.css   the page and its scripts, as they are
    model.json     the config, the tokenizer for the page's JavaScript, and where each tensor lies in weights.bin
    weights.bin    every tensor of `state_for_saving`, and the position tables, float32 little-endian, in order

The page reads model.json and weights.bin with fetch(), so it is opened from a web host (GitHub Pages,
`python -m http.server`), not from a file:// address, where browsers refuse module scripts.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
from pathlib import Path

import regex
import torch

from lucidlm.errors import ConfigError
from lucidlm.model import GPT
from lucidlm.outputs import WEB_EXPORT, written_directory
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer
from lucidlm.tokenizers.bpe import SPLIT_PATTERNS
from lucidlm.tokenizers.word import WORD_PATTERN
from lucidlm.web import MODEL_PAGE, MODEL_SCRIPTS, STATIC

# A page downloads all its weights before it shows anything, and runs them in JavaScript: beyond this a phone
# waits too long and the page grows slow (a 50 MB float32 model is about 12M parameters).
MAX_WEIGHT_BYTES = 50 * 2**20


@functools.cache
def whitespace_class(engine: str) -> str:
    """The characters Python's `\\s` matches (the `re` or the `regex` module's, which differ in four control
    characters), as a JavaScript class body: JavaScript's own `\\s` differs from both (U+FEFF in, U+0085 out)."""
    pattern = (re if engine == "re" else regex).compile(r"\s")
    return "".join(f"\\u{c:04x}" for c in range(0x10000) if pattern.match(chr(c)))


def js_pattern(python_pattern: str, engine: str) -> str:
    """A split pattern of the tokenizers in JavaScript's syntax (with the `u` flag). Python's \\s, \\S and \\w
    become explicit classes (\\w is letters, digits and `_` in Python, ASCII only in JavaScript); possessive
    quantifiers become plain ones (in these patterns nothing could backtrack into them); `(?i:...)` is spelled
    out in both cases."""
    space, word = whitespace_class(engine), "\\p{L}\\p{N}_"
    text = python_pattern.replace("(?i:[sdmt]|ll|ve|re)", "(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])")
    text = text.replace("?+", "?").replace("++", "+")
    out, in_class, i = [], False, 0
    while i < len(text):
        piece = text[i : i + 2] if text[i] == "\\" else text[i]
        if piece == "[":
            in_class = True
        elif piece == "]":
            in_class = False
        if piece in ("\\s", "\\w"):
            chars = space if piece == "\\s" else word
            out.append(chars if in_class else f"[{chars}]")
        elif piece == "\\S":
            out.append(f"[^{space}]")
        else:
            out.append(piece)
        i += len(piece)
    return "".join(out)


def tokenizer_for_page(tokenizer: Tokenizer) -> dict:
    """model.json's "tokenizer": what static/tokenizer.js needs to encode and decode as the Python one does."""
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "chars": tokenizer.chars}
    if isinstance(tokenizer, WordTokenizer):
        return {"kind": "word", "vocab": tokenizer.vocab, "split": js_pattern(WORD_PATTERN.pattern, "re")}
    if isinstance(tokenizer, BPETokenizer):
        return {
            "kind": "bpe",
            "token_bytes": [base64.b64encode(b).decode() for b in tokenizer.token_bytes],
            "merges": [list(pair) for pair in tokenizer.merges],
            "split": js_pattern(SPLIT_PATTERNS[tokenizer.pattern], "regex"),
            "special_tokens": tokenizer.special_tokens,
        }
    raise ConfigError(
        f"the web export runs lucidlm's char, word and BPE tokenizers in the browser, not a {tokenizer.kind} one "
        "(an imported Hugging Face tokenizer); export it with --format hf or gguf"
    )


def page_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """The weights by their PyTorch names, and the position tables the model computes from its config."""
    tensors = dict(model.state_for_saving())
    for name in ("rope_cos", "rope_sin", "sinusoid"):
        if hasattr(model, name):
            tensors[name] = getattr(model, name)
    return tensors


def page_contents(model: GPT, tokenizer: Tokenizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """model.json's tokenizer and the tensors of weights.bin; ConfigError, naming the reason, for a model or
    tokenizer that a page cannot run."""
    described, tensors = tokenizer_for_page(tokenizer), page_tensors(model)
    size = sum(t.numel() for t in tensors.values()) * 4
    if size > MAX_WEIGHT_BYTES:
        raise ConfigError(
            f"the model's weights are {size / 2**20:.0f} MB in float32; a web page takes at most "
            f"{MAX_WEIGHT_BYTES // 2**20} MB (about 12M parameters), since it downloads them all and runs them in "
            "JavaScript; export a smaller model, or use --format hf or gguf"
        )
    return described, tensors


def check_web_exportable(model: GPT, tokenizer: Tokenizer) -> None:
    """Raise ConfigError, naming the reason, for a model or tokenizer that a page cannot run."""
    page_contents(model, tokenizer)


def export_web(
    model: GPT, tokenizer: Tokenizer, out: str | os.PathLike, force: bool = False, lessons: str | None = None
) -> Path:
    """Write the model's static page into the directory `out` (see the module's docstring). `lessons` is where
    the lesson pages are, relative to it, when the page is part of a built tutorial: the explainer links them."""
    described, tensors = page_contents(model, tokenizer)
    config = {name: getattr(model.config, name) for name in model.config.__dataclass_fields__}
    with written_directory(out, WEB_EXPORT, force) as site:
        index, offset = {}, 0
        with open(site / "weights.bin", "wb") as weights:
            for name, tensor in tensors.items():
                data = tensor.detach().to(torch.float32).cpu().contiguous().numpy().astype("<f4", copy=False)
                weights.write(data.tobytes())
                index[name] = {"offset": offset, "shape": list(tensor.shape)}
                offset += data.nbytes
        manifest = {
            "exported_by": "lucidlm",
            "config": config,
            "tokenizer": described,
            "tensors": index,
            "lessons": lessons,
        }
        (site / "model.json").write_text(json.dumps(manifest), encoding="utf-8")
        shutil.copyfile(MODEL_PAGE, site / "index.html")
        for name in (*MODEL_SCRIPTS, "style.css"):
            shutil.copyfile(STATIC / name, site / name)
    return Path(out)
