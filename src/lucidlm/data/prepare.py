"""Text to token files: `train.bin`, `val.bin`, `tokenizer.json` and `meta.json` in one directory.

The text is streamed in chunks, never held whole, so a corpus larger than memory prepares fine. As nanoGPT
does, the first `1 - val_fraction` of the characters are the training split and the rest the validation split.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from lucidlm.data.corpus import corpus_path, iter_text
from lucidlm.errors import ConfigError, DataError
from lucidlm.outputs import DATA_DIR, check_target, written_directory
from lucidlm.tokenizers import Tokenizer

TOKENIZER_KINDS = ("char", "word", "bpe")
# Inputs larger than this are encoded by several processes (the BPE tokenizer's encode_stream).
PARALLEL_CHARS = 4 << 20
# A word tokenizer may carry at most this much text over a chunk boundary before it cuts anyway.
MAX_CARRY = 1 << 20


@dataclass
class Source:
    path: Path
    name: str  # what meta.json records: the corpus name or the file path as given


def sources_for(corpus: str | None, files: list[Path]) -> list[Source]:
    if corpus:
        return [Source(corpus_path(corpus), corpus)]
    return [Source(p, str(p)) for p in files]


def write_array(f: BinaryIO, array: np.ndarray) -> None:
    """The array's bytes, through Python's file: a full disk is OSError "No space left on device" with its
    errno (numpy's `tofile` says only "66818 requested and 0 written")."""
    f.write(np.ascontiguousarray(array).data)


def token_dtype(vocab_size: int) -> np.dtype:
    # Little-endian whatever the machine, so token files move between machines unchanged.
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def _iter_sources(sources: list[Source]) -> Iterator[str]:
    """All sources as one stream of text; a file that lacks a final newline is given one."""
    for source in sources:
        last = ""
        for chunk in iter_text(source.path):
            yield chunk
            last = chunk
        if _needs_separator(last) and source is not sources[-1]:
            yield "\n"


def _needs_separator(last_chunk: str) -> bool:
    return bool(last_chunk) and not last_chunk.endswith("\n")


def _iter_split(sources: list[Source], start: int, stop: int | None) -> Iterator[str]:
    """The characters [start, stop) of the joined stream."""
    position = 0
    for chunk in _iter_sources(sources):
        end = position + len(chunk)
        lo, hi = max(start - position, 0), len(chunk) if stop is None else min(stop - position, len(chunk))
        if lo < hi:
            yield chunk[lo:hi]
        position = end
        if stop is not None and position >= stop:
            return


def _iter_token_safe(chunks: Iterator[str], tokenizer: type[Tokenizer]) -> Iterator[str]:
    """Re-cut chunks where the tokenizer allows, so no token straddles two chunks."""
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = tokenizer.safe_cut(text)
        if cut == 0 and len(text) > MAX_CARRY:
            cut = len(text)
        carry = text[cut:]
        if cut:
            yield text[:cut]
    if carry:
        yield carry


def _recording_lengths(pieces: Iterator[str], lengths: deque[int]) -> Iterator[str]:
    for piece in pieces:
        lengths.append(len(piece))
        yield piece


def prepare(
    sources: list[Source],
    out_dir: str | os.PathLike,
    tokenizer_kind: str = "char",
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    progress: bool | None = None,
    tokenizer: Tokenizer | None = None,
    force: bool = False,
) -> dict:
    """Tokenize `sources` into `out_dir`; returns the metadata written to `meta.json`.

    With `tokenizer`, that tokenizer is used as it is (to fine-tune a model on new text); otherwise one of
    kind `tokenizer_kind` is learned from the text. An existing `out_dir` is refused unless it is an earlier
    data directory and `force` is given (lucidlm.outputs)."""
    if tokenizer is not None:
        tokenizer_kind = tokenizer.kind
    elif tokenizer_kind not in TOKENIZER_KINDS:
        raise ConfigError(f"unknown tokenizer {tokenizer_kind!r}; choose one of: {', '.join(TOKENIZER_KINDS)}")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction {val_fraction} must lie strictly between 0 and 1, e.g. 0.1")
    if not sources:
        raise DataError("no input text given; pass --corpus shakespeare or --input FILE ...")
    check_target(out_dir, DATA_DIR, force)  # before reading the text, which may take long
    disable = None if progress is None else not progress

    # Pass 1: count characters, hash each source, and catch empty or non-UTF-8 files before writing anything.
    total_chars, source_meta = 0, []
    for source in sources:
        digest, chars, last = hashlib.sha256(), 0, ""
        for chunk in iter_text(source.path):
            digest.update(chunk.encode("utf-8"))
            chars += len(chunk)
            last = chunk
        if chars == 0:
            raise DataError(f"{source.name} is empty; give a file that contains text")
        source_meta.append({"source": source.name, "chars": chars, "sha256": digest.hexdigest()})
        total_chars += chars + (_needs_separator(last) and source is not sources[-1])
    split_at = int(total_chars * (1.0 - val_fraction))

    # Pass 2: learn the vocabulary. Char vocabularies come from all the text, so that every validation
    # character can be encoded; word and BPE vocabularies from the training split only, so that validation stays
    # unseen.
    cls = Tokenizer.registry[tokenizer_kind]
    if tokenizer is None:
        train_stop = None if tokenizer_kind == "char" else split_at
        tokenizer = cls.train(_iter_token_safe(_iter_split(sources, 0, train_stop), cls), vocab_size)
    dtype = token_dtype(tokenizer.vocab_size)

    # Pass 3: encode each split to its token file, in a temporary directory renamed into place at the end.
    with written_directory(out_dir, DATA_DIR, force) as out:
        counts = _encode_splits(sources, tokenizer, cls, out, split_at, total_chars, dtype, disable)
        meta = {
            "tokenizer": tokenizer_kind,
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "chars": total_chars,
            "val_fraction": val_fraction,
            "sources": source_meta,
        }
        tokenizer.save(out / "tokenizer.json")
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _encode_splits(
    sources: list[Source],
    tokenizer: Tokenizer,
    cls: type[Tokenizer],
    out: Path,
    split_at: int,
    total_chars: int,
    dtype: np.dtype,
    disable: bool | None,
) -> dict[str, int]:
    """Write train.bin and val.bin; returns the token count of each (neither may be empty)."""
    counts = {}
    processes = min(8, os.cpu_count() or 1) if total_chars > PARALLEL_CHARS else 1
    with tqdm(total=total_chars, unit="char", unit_scale=True, desc="tokenizing", disable=disable) as bar:
        for split, start, stop in (("train", 0, split_at), ("val", split_at, None)):
            counts[split] = 0
            lengths: deque[int] = deque()  # of the pieces handed out, to advance the bar as results come
            pieces = _recording_lengths(_iter_token_safe(_iter_split(sources, start, stop), cls), lengths)
            with open(out / f"{split}.bin", "wb") as f:
                for ids in tokenizer.encode_stream(pieces, processes):
                    write_array(f, np.asarray(ids, dtype=dtype))
                    counts[split] += len(ids)
                    bar.update(lengths.popleft())
    for split in ("train", "val"):
        if counts[split] == 0:
            raise DataError(
                f"the {split} split is empty ({total_chars} characters in all); give more text or change --val-fraction"
            )
    return counts
