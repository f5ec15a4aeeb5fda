"""Reading the files lucidlm is handed, in one place: with a bound on their size, and JSON checked against the
shape lucidlm expects, so that a damaged or hostile file is one line naming the file and the field.

A file with no end (`--config /dev/zero`) must not be read until memory runs out, and a file of the wrong
shape (a `latest.json` without `step`, a `"step": "20"`, a truncated `state.json`, an integer of thousands of
digits, which Python refuses with a ValueError of its own) must not become a KeyError, TypeError or ValueError
traceback somewhere later (docs/reliability.md lists the cases).

A shape is written as the data it describes:
- a type (`str`, `dict`, `list`), COUNT (a whole number, 0 or more) or NUMBER (any finite int or float);
- a dict of the keys that must be there, each with its shape; a key ending in "?" may be missing, and the key
  "*" gives the shape of every other value (a dict of files by name);
- a one-item list: a list whose every item has that shape;
- a tuple of shapes: any one of them (None: null).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lucidlm.errors import LucidError

MiB = 2**20
JSON_LIMIT = 64 * MiB  # lucidlm's own JSON (manifests, meta.json, a Hub tokenizer.json is about 11 MB)
COUNT, NUMBER = "a whole number", "a number"


def open_input(path: str | os.PathLike, error: type[LucidError], give: str) -> BinaryIO:
    """`path` opened to read bytes, or `error` in one line ending with `give` (what to give instead)."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise error(f"{path}: no such file; {give}") from None
    except IsADirectoryError:
        raise error(f"{path} is a directory; {give}") from None
    except OSError as exc:
        raise error(f"cannot read {path} ({exc.strerror}); {give}") from None


def too_large(path: str | os.PathLike, limit: int, error: type[LucidError], give: str) -> LucidError:
    return error(f"{path} is larger than {limit / MiB:g} MiB, more than lucidlm reads here; {give}")


def read_bytes(path: str | os.PathLike, limit: int, error: type[LucidError], give: str) -> bytes:
    """The bytes of `path`, refused in one line (`error`, ending with `give`: what to give instead) if there
    is no such file or it holds more than `limit` bytes. Devices and pipes are read up to the bound too."""
    with open_input(path, error, give) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise too_large(path, limit, error, give)
    return data


def read_text(path: str | os.PathLike, limit: int, error: type[LucidError], give: str) -> str:
    """`read_bytes` as UTF-8 text."""
    try:
        return read_bytes(path, limit, error, give).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not a text file (not UTF-8 at byte {exc.start}); {give}") from None


def read_lines(
    path: str | os.PathLike, limit: int, error: type[LucidError], give: str, line_limit: int | None = None
) -> Iterator[tuple[int, str | None]]:
    """(line number, text) for each line of a UTF-8 file, read one line at a time, up to `limit` bytes in all (as
    `read_bytes`). A line longer than `line_limit` bytes is (number, None): skipped as it is read, never held."""
    longest = limit if line_limit is None else line_limit
    read, number = 0, 0
    with open_input(path, error, give) as f:
        while line := f.readline(longest + 1):
            number += 1
            read += len(line)
            too_long = len(line) > longest and not line.endswith(b"\n")
            while too_long and not line.endswith(b"\n") and line:  # the rest of the line, a piece at a time
                line = f.readline(MiB)
                read += len(line)
                if read > limit:
                    break
            if read > limit:
                raise too_large(path, limit, error, give)
            if too_long:
                yield number, None
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{path} line {number} is not UTF-8 text (at its byte {exc.start}); {give}") from None
            yield number, text.removesuffix("\n").removesuffix("\r")


def parse_json(text: str | bytes) -> object:
    """json.loads, with every way it can fail on a flat document (bad syntax, bytes that are not UTF-8, an
    integer of more than 4,300 digits) a ValueError whose message is one short line. (Nesting thousands deep
    is a RecursionError, left to the caller.)"""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        if "digits" in str(exc):
            raise ValueError("not valid JSON for lucidlm (a number of more than 4,300 digits)") from None
        raise ValueError(f"not valid JSON ({str(exc).splitlines()[0][:200]})") from None


def shape_problem(value: object, shape: object, where: str = "") -> str | None:
    """What keeps `value` from having `shape` (the field named as a path: `files.model.safetensors.bytes`), or
    None."""
    field = where or "the top level"
    if isinstance(shape, tuple):
        problems = [shape_problem(value, alternative, where) for alternative in shape]
        return None if None in problems else problems[0]
    if shape is None:
        return None if value is None else f"{field} must be null, not {_shown(value)}"
    if shape is COUNT:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else f"{field} must be a whole number of 0 or more, not {_shown(value)}"
    if shape is NUMBER:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else f"{field} must be a finite number, not {_shown(value)}"
    if isinstance(shape, type):
        return None if isinstance(value, shape) else f"{field} must be {_article(shape)}, not {_shown(value)}"
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{field} must be a list, not {_shown(value)}"
        return next((p for i, item in enumerate(value) if (p := shape_problem(item, shape[0], f"{where}[{i}]"))), None)
    if not isinstance(value, dict):
        return f"{field} must be an object, not {_shown(value)}"
    for key, inner in shape.items():
        name = key.removesuffix("?")
        if key == "*":
            continue
        if name not in value:
            if key.endswith("?"):
                continue
            return f"{where + '.' if where else ''}{name} is missing"
        if problem := shape_problem(value[name], inner, f"{where}.{name}" if where else name):
            return problem
    if "*" in shape:
        for name, item in value.items():
            if name not in shape and (problem := shape_problem(item, shape["*"], f"{where}.{name}" if where else name)):
                return problem
    return None


def _article(kind: type) -> str:
    return {str: "a string", dict: "an object", list: "a list", bool: "true or false"}.get(kind, kind.__name__)


def _shown(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_json(path: str | os.PathLike, shape: object, error: type[LucidError], fix: str) -> dict:
    """A JSON file lucidlm wrote (a manifest, state.json, meta.json, config.json), checked against `shape`: a
    missing, damaged or hand-edited file is `error` in one line naming the file and the field, ending in `fix`."""
    path = Path(path)
    try:
        data = parse_json(read_bytes(path, JSON_LIMIT, error, fix))
    except (ValueError, RecursionError) as exc:
        raise error(f"{path} is damaged: {exc}; {fix}") from None
    if problem := shape_problem(data, shape):
        raise error(f"{path} is damaged: {problem}; {fix}")
    return data


def sha256_file(path: Path) -> str:
    """A file's sha256, read a MiB at a time: the check of data sources, checkpoints and generated files."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()
