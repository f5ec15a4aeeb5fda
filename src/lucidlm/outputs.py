"""Whether a command may write to a path: the one place that decides it, for every sub-command.

A command writes only what it creates. An output (a directory, or a file such as a GGUF model) is written
under a temporary name beside the target and renamed into place once complete, so a failed command leaves
nothing behind. What the target already holds decides what happens:

- nothing (no such path, or an empty directory): the output is written there;
- the same command's own earlier output, recognised by its files (every entry is one the command writes,
  and its marker file reads as the command writes it): replaced with `--force`, refused without;
- anything else (a user's files, a run where a data directory is asked for, `.`, the parent directory):
  refused, with `--force` too. lucidlm never deletes what it did not write.

A symbolic link at the target, or above it, is followed: the rules apply to the directory or file it points
to, the output is written there, and the link itself is left as it was (a user who links `runs` to a bigger
disk means the disk). Temporaries carry the writing process's id in their name, so the next command that
writes beside them knows one left by a killed command from one still being written, and removes it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lucidlm.errors import ConfigError
from lucidlm.inputs import sha256_file

FORCE = "--force"
FORCE_HELP = "replace an earlier output of this same command (never anything else)"


@dataclass(frozen=True)
class OutputKind:
    """What a command writes into a directory, and how to tell its earlier output from anything else."""

    name: str  # "data directory"
    entries: frozenset[str]  # every name the command writes at the top of the directory
    marker: str  # the JSON file whose keys identify the output
    keys: tuple[str, ...]
    flag: str = "--out"  # the option that names the directory, for the messages

    def holds(self, path: Path) -> bool:
        """Whether `path` is a directory holding this kind of output and nothing else."""
        try:
            names = {_without_tmp(entry.name) for entry in path.iterdir()}
            data = json.loads((path / self.marker).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return names <= self.entries and isinstance(data, dict) and all(key in data for key in self.keys)


def _without_tmp(name: str) -> str:
    """A file being replaced when a command was killed (`latest.json.tmp`, `loss.tmp.png`) counts as the file."""
    return name.replace(".tmp", "")


DATA_DIR = OutputKind(
    "data directory",
    frozenset({"train.bin", "val.bin", "tokenizer.json", "tokenizer_config.json", "meta.json"})
    | {f"{split}.{part}.bin" for split in ("train", "val") for part in ("mask", "starts")}  # chat data
    | {f"{split}.answers.jsonl" for split in ("train", "val")},  # task data
    "meta.json",
    ("tokenizer", "vocab_size", "dtype", "sources"),
)
RUN_DIR = OutputKind(
    "run directory",
    frozenset({"config.json", "tokenizer.json", "tokenizer_config.json", "metrics.jsonl", "loss.png", "latest.json"})
    | {"best.json", "checkpoints", "data"},
    "config.json",
    ("model", "train"),
)
HF_EXPORT = OutputKind(
    "Hugging Face export",
    frozenset(
        {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    ),
    "config.json",
    ("exported_by",),
)
TUTORIAL_SITE = OutputKind(
    "tutorial site",
    frozenset(
        {"index.html", "faq.html", "style.css", "lessons", "model", "lucidlm-site.json"}
        | {"course.js", "editor", "runtime"}  # what runs the lessons in the page
    ),
    "lucidlm-site.json",
    ("lessons", "built"),
    "--build",
)
WEB_EXPORT = OutputKind(
    "web export",
    frozenset(
        {"index.html", "explain.js", "gpt.js", "tokenizer.js", "lensview.js", "style.css", "model.json", "weights.bin"}
    ),
    "model.json",
    ("exported_by", "config", "tensors"),
)
SCALING_STUDY = OutputKind(
    "scaling-law study",
    frozenset({"study.json", "scale.json", "scale.png", "runs"}),
    "study.json",
    ("settings", "finished"),
)
KINDS = (DATA_DIR, RUN_DIR, HF_EXPORT, TUTORIAL_SITE, WEB_EXPORT, SCALING_STUDY)


@dataclass(frozen=True)
class FileKind:
    """A one-file output, told from anything else by the bytes it starts with."""

    name: str  # "GGUF file"
    magic: bytes
    example: str  # a file name of the kind, for messages

    def holds(self, path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                return f.read(len(self.magic)) == self.magic
        except OSError:
            return False


GGUF_FILE = FileKind("GGUF file", b"GGUF", "model.gguf")
PAIRS_FILE = FileKind("file of preference pairs from lucidlm eval", b'{"source": "lucidlm eval', "pairs.jsonl")
PNG_FILE = FileKind("PNG picture", b"\x89PNG\r\n\x1a\n", "heads.png")


def real_path(path: str | os.PathLike, flag: str = "--out") -> Path:
    """The absolute path with every symbolic link in it followed, which is where the output will go."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # a loop of links (RuntimeError before Python 3.13)
        raise ConfigError(f"{flag} {path} is a loop of symbolic links; choose another {flag}") from exc


def _check_ancestors(path: Path, flag: str = "--out") -> None:
    for ancestor in path.parents:
        if ancestor.exists() and not ancestor.is_dir():
            raise ConfigError(f"{ancestor} is a file, not a directory; choose a directory for {flag}")


def _replacing(path: Path, what: str, force: bool, flag: str = "--out") -> bool:
    """An earlier output of the command at `path`: replaced with --force, refused without."""
    if not force:
        raise ConfigError(f"{path} already holds a {what}; pass {FORCE} to replace it, or choose another {flag}")
    return True


def check_file_target(path: str | os.PathLike, kind: FileKind, force: bool, flag: str = "--out") -> bool:
    """As `check_target`, for a one-file output: True when `path` is an earlier file of `kind` to replace."""
    path = real_path(path, flag)
    _check_ancestors(path, flag)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give {flag} a file name, e.g. {path / kind.example}")
    if not path.exists():
        return False
    if kind.holds(path):
        return _replacing(path, kind.name, force, flag)
    raise ConfigError(
        f"{path} exists and is not a {kind.name}; choose another {flag} (lucidlm never replaces files it did not "
        f"write, even with {FORCE})"
    )


@contextlib.contextmanager
def written_file(path: str | os.PathLike, kind: FileKind, force: bool = False, flag: str = "--out") -> Iterator[Path]:
    """A temporary file name beside `path` to write the output to; renamed to `path` (replacing an earlier
    file of `kind`) when the block ends without an error, removed with the directories this made otherwise."""
    check_file_target(path, kind, force, flag)
    path = real_path(path)
    made = make_parents(path)
    remove_stale_temporaries(path)
    tmp = _beside(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        remove_made(made)
        raise


GENERATED = ".lucidlm-generated.json"  # in a directory shared with the user's files: the sha256 of each file written


def _generated(directory: Path) -> dict[str, str]:
    """The files a command wrote into `directory` (which the user's files may share), by name: their sha256."""
    try:
        listed = json.loads((directory / GENERATED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return listed if isinstance(listed, dict) else {}


def check_member(path: str | os.PathLike, force: bool, flag: str = "--out") -> None:
    """Refuse (one line) unless a command may write the file `path` in a directory that it shares with other
    files: a new name may be written; a file that the directory's GENERATED list names with the sha256 it still
    has (the command's own earlier output, unchanged since) is replaced with --force; anything else is refused."""
    path = real_path(path, flag)
    _check_ancestors(path, flag)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; choose another {flag}")
    if not path.exists():
        return
    if _generated(path.parent).get(path.name) != sha256_file(path):
        raise ConfigError(
            f"{path} exists and is not a file lucidlm wrote (or it was changed since); choose another {flag} "
            f"(lucidlm never replaces files it did not write, even with {FORCE})"
        )
    _replacing(path, "file lucidlm wrote", force, flag)


def write_member(path: str | os.PathLike, content: str, force: bool, flag: str = "--out") -> None:
    """Write `content` to `path` by check_member's rule, under a temporary name, and list it in GENERATED."""
    check_member(path, force, flag)
    path = real_path(path, flag)
    make_parents(path)
    remove_stale_temporaries(path)
    tmp = _beside(path, "tmp")
    try:
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    listed = {**_generated(path.parent), path.name: sha256_file(path)}
    listing = _beside(path.parent / GENERATED, "tmp")
    listing.write_text(json.dumps(listed, indent=1) + "\n", encoding="utf-8")
    os.replace(listing, path.parent / GENERATED)


def write_json_atomic(path: Path, data: dict) -> None:
    """`data` as JSON at `path`, whole or not at all: written beside it, flushed to disk, then renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_target(path: str | os.PathLike, kind: OutputKind, force: bool) -> bool:
    """Refuse (ConfigError, one line) unless `path` may receive `kind`; True when it holds an earlier output of
    that kind, which `force` allows to be replaced."""
    path = real_path(path, kind.flag)
    _check_ancestors(path, kind.flag)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file, not a directory; choose a directory for {kind.flag}")
    if not path.exists():
        return False
    if path == Path.cwd().resolve() or path in Path.cwd().resolve().parents:
        raise ConfigError(
            f"{kind.flag} {path} is the current directory or above it; name a new directory for the output"
        )
    if not any(path.iterdir()):
        return False
    if kind.holds(path):
        return _replacing(path, kind.name, force, kind.flag)
    other = next((k.name for k in KINDS if k is not kind and k.holds(path)), None)
    what = f"holds a {other}, not a {kind.name}" if other else f"is not empty and is not a {kind.name} lucidlm wrote"
    raise ConfigError(
        f"{path} {what}; choose a new or empty {kind.flag} (lucidlm never replaces files it did not write, "
        f"even with {FORCE})"
    )


def make_parents(path: Path) -> list[Path]:
    """Create the missing directories above `path`; returns them, deepest first, for `remove_made`."""
    missing = [parent for parent in [path.parent, *path.parent.parents] if not parent.exists()]
    for directory in reversed(missing):
        directory.mkdir()
    return missing


def remove_made(directories: list[Path]) -> None:
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


NAME_MAX = 255  # bytes in one file name, on Linux, macOS and Windows file systems alike


def _temporary_prefix(path: Path, role: str) -> str:
    """`.NAME.lucidlm-ROLE-`, with NAME shortened so that the whole temporary name fits in NAME_MAX bytes."""
    room = NAME_MAX - len(f"..lucidlm-{role}-{2**22}-{'0' * 8}")
    name = path.name.encode()[:room].decode(errors="ignore")
    return f".{name}.lucidlm-{role}-"


def _beside(path: Path, role: str) -> Path:
    """A name beside `path` for a temporary ("tmp") or the earlier output being replaced ("old"), carrying this
    process's id, so that a later command can tell one left by a killed command."""
    return path.parent / f"{_temporary_prefix(path, role)}{os.getpid()}-{secrets.token_hex(4)}"


def _writer_is_gone(leftover: Path, prefix: str) -> bool:
    """Whether the process named in a temporary's name has ended (or its pid now belongs to a process that
    started after the temporary was last written)."""
    pid, _, tail = leftover.name[len(prefix) :].partition("-")
    if not (pid.isdigit() and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail)):
        return False  # not a name lucidlm writes: someone else's file
    try:
        started = _process_start(int(pid))
        return started is None or started > leftover.lstat().st_mtime
    except OSError:
        return False


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None if there is none; -inf where /proc is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line[:5] == "btime")
    except (OSError, ValueError, IndexError, StopIteration):
        return -math.inf
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries a killed lucidlm command left beside `path` (kill -9 gives it no time to), saying
    so; an earlier output that a killed command had moved aside to replace is left where it is, and named."""
    for role in ("tmp", "old"):
        prefix = _temporary_prefix(path, role)
        for leftover in sorted(path.parent.glob(glob.escape(prefix) + "*")):
            if not _writer_is_gone(leftover, prefix):
                continue
            if role == "old":
                print(
                    f"note: {leftover} holds an earlier output that a killed lucidlm command was replacing; "
                    "move it back or remove it",
                    file=sys.stderr,
                )
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            print(f"note: removed {leftover}, left half-written by a lucidlm command that was killed", file=sys.stderr)


@contextlib.contextmanager
def written_directory(path: str | os.PathLike, kind: OutputKind, force: bool = False) -> Iterator[Path]:
    """A temporary directory beside `path` to write the output into. When the block ends without an error it
    is renamed to `path` (an earlier output there is removed after the rename); on any error or Ctrl-C it is
    removed, with the parent directories this made."""
    replacing = check_target(path, kind, force)
    path = real_path(path, kind.flag)
    made = make_parents(path)
    remove_stale_temporaries(path)
    tmp = _beside(path, "tmp")
    try:
        tmp.mkdir()
        yield tmp
        if path.exists():  # an empty directory, or (with force) an earlier output of this kind
            old = _beside(path, "old")
            os.rename(path, old)
            os.rename(tmp, path)
            if replacing:
                shutil.rmtree(old)
            else:
                old.rmdir()
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_made(made)
        raise


def run_directory(path: str | os.PathLike, force: bool = False) -> contextlib.AbstractContextManager[Path]:
    """The directory of a new training run, which keeps what it wrote from its first checkpoint on (the manifest
    latest.json names it), to resume from."""
    return growing_directory(path, RUN_DIR, force, "latest.json")


@contextlib.contextmanager
def growing_directory(path: str | os.PathLike, kind: OutputKind, force: bool, kept: str) -> Iterator[Path]:
    """The directory of an output that grows while the command runs (a run's checkpoints, a study's runs), and so
    is not renamed into place. If the block fails before the file `kept` is written in it, what it wrote is
    removed (and an earlier output that `force` replaced is put back); after it, what it wrote stays."""
    replacing = check_target(path, kind, force)
    path = real_path(path)
    made = make_parents(path)
    remove_stale_temporaries(path)
    earlier = None
    if replacing:
        earlier = _beside(path, "old")
        os.rename(path, earlier)
    created = not path.exists()
    path.mkdir(exist_ok=True)
    try:
        yield path
    except BaseException:
        if not (path / kept).exists():
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:  # it was empty: everything in it is this command's
                for entry in path.iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
            if earlier is not None:
                os.rename(earlier, path)
                earlier = None
            remove_made(made)
        raise
    finally:
        if earlier is not None:
            shutil.rmtree(earlier, ignore_errors=True)


def holds_run(path: str | os.PathLike) -> bool:
    """Whether `path` is a run directory that `lucidlm train` wrote (for --resume)."""
    return (Path(path) / "config.json").is_file() and (Path(path) / "latest.json").is_file()
