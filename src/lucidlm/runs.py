"""The run directory's format, in one place: written by training, read by everything that loads a run.
Safetensors for tensors, JSON for everything else, and no pickle anywhere.

A run directory holds
    config.json, tokenizer.json, metrics.jsonl, loss.png
    checkpoints/step-0000500/{model.safetensors, optimizer.safetensors, state.json}
    latest.json, best.json   (manifests: which checkpoint, its step, and each file's size and sha256)

A checkpoint is written into `step-N.tmp/`, renamed to `step-N/`, and only then named by a manifest, which is
itself written to a temporary file and renamed. A kill at any moment therefore leaves the previous manifest
pointing at a complete checkpoint. Directories no manifest names are removed after each save.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lucidlm.errors import CheckpointError, ConfigError
from lucidlm.inputs import COUNT, NUMBER, read_json, sha256_file
from lucidlm.outputs import write_json_atomic
from lucidlm.run_config import RunConfig

# --- reading: manifests, checkpoints and settings -------------------------------------------------------------

POINTERS = ("latest", "best")
MANIFEST = {
    "checkpoint": str,
    "step": COUNT,
    "val_loss?": (NUMBER, None),
    "files": {"*": {"bytes": COUNT, "sha256": str}},
}
STATE = {"step": COUNT, "elapsed?": NUMBER}


def pointer_path(run_dir: Path, which: str) -> Path:
    return Path(run_dir) / f"{which}.json"


def read_manifest(run_dir: str | Path, which: str) -> dict:
    path = pointer_path(Path(run_dir), which)
    if not path.exists():
        raise CheckpointError(
            f"{run_dir} holds no {which} checkpoint ({path.name} is missing); "
            "give a run directory that `lucidlm train --out` wrote"
        )
    return read_json(path, MANIFEST, CheckpointError, "delete it to fall back on the other checkpoint")


def read_state(directory: Path) -> dict:
    """A checkpoint's state.json: its step, elapsed time and whatever else the backend saved."""
    return read_json(directory / "state.json", STATE, CheckpointError, "the checkpoint is damaged, train again")


def find_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The directory of a complete checkpoint, its files checked against the manifest that names it.

    `which` is "best" (falling back to "latest" when no evaluation has happened yet), "latest", or "step-N"
    for the checkpoint of step N that a manifest names (a run keeps its latest and its best)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory; pass the --out directory of `lucidlm train`")
    if which == "best" and not pointer_path(run_dir, "best").exists():
        which = "latest"
    if which in POINTERS:
        manifest, source = read_manifest(run_dir, which), f"{which}.json"
    else:
        manifest, source = _manifest_of_step(run_dir, which), "the manifest that names it"
    directory = run_dir / manifest["checkpoint"]
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.exists() or path.stat().st_size != expected["bytes"] or sha256_file(path) != expected["sha256"]:
            raise CheckpointError(
                f"{path} is missing or does not match {source}; the checkpoint is "
                "damaged, train again or restore the file"
            )
    return directory


def _manifest_of_step(run_dir: Path, which: str) -> dict:
    try:
        step = int(which.removeprefix("step-"))
        if not which.startswith("step-") or step < 0:
            raise ValueError
    except ValueError:
        raise CheckpointError(f"--which {which}: say best, latest or step-N (e.g. step-500)") from None
    kept = {}
    for pointer in POINTERS:
        if pointer_path(run_dir, pointer).exists():
            manifest = read_manifest(run_dir, pointer)
            kept[manifest["step"]] = manifest
    if step not in kept:
        steps = ", ".join(f"step-{s}" for s in sorted(kept)) or "none"
        raise CheckpointError(f"{run_dir} has no checkpoint of step {step}; it keeps the latest and the best: {steps}")
    return kept[step]


def split_checkpoint_path(path: str | Path, which: str = "best") -> tuple[Path, str]:
    """(run directory, which) for `--checkpoint`: a run directory, or one of its `checkpoints/step-N` folders."""
    path = Path(path)
    if path.parent.name == "checkpoints" and path.name.startswith("step-"):
        step = path.name.removeprefix("step-")
        if not step.isdigit():
            raise CheckpointError(
                f"{path} is not a complete checkpoint (one being written, or left by a killed run); give the run "
                f"directory {path.parent.parent} or one of its checkpoints/step-N folders"
            )
        return path.parent.parent, f"step-{int(step)}"
    return path, which


def checkpoint_step(directory: Path) -> int:
    """The step a checkpoint directory holds."""
    return read_state(directory)["step"]


RUN_CONFIG = {"model": dict, "train": dict, "data_sources?": [{"sha256": str}]}


def read_run_config_json(run_dir: str | Path) -> dict:
    """A run's config.json as JSON, checked for the parts every reader needs."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CheckpointError(
            f"{run_dir} is not a run directory (no config.json); pass the --out directory of `lucidlm train`"
        )
    return read_json(path, RUN_CONFIG, CheckpointError, "restore it from the run")


def read_run_config(run_dir: str | Path) -> RunConfig:
    try:
        return RunConfig.from_dict(read_run_config_json(run_dir))
    except (ConfigError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{Path(run_dir) / 'config.json'} is damaged ({exc}); restore it from the run") from None


# --- writing: a checkpoint, then the manifests that name it ---------------------------------------------

FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_tensors: dict[str, torch.Tensor],
    optimizer_tensors: dict[str, torch.Tensor],
    progress: dict,
    is_best: bool,
) -> Path:
    """Write the checkpoint for `step` and point `latest` (and `best` when `is_best`) at it.

    `model_tensors` are the weights by state-dict name; `optimizer_tensors` whatever else the backend needs to
    continue exactly (moments, RNG state); `progress` is JSON (step, elapsed time, losses, ...).
    """
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f"{final.name}.tmp"
    try:
        if f"checkpoints/{final.name}" not in _named(run_dir):
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            tmp.mkdir()
            save_file(model_tensors, tmp / "model.safetensors")
            save_file(optimizer_tensors, tmp / "optimizer.safetensors")
            write_json_atomic(tmp / "state.json", {**progress, "step": step})
            for name in FILES:
                _fsync(tmp / name)
            os.replace(tmp, final)
        manifest = {
            "checkpoint": f"checkpoints/{final.name}",
            "step": step,
            "val_loss": progress.get("val_loss"),
            "files": {
                name: {"bytes": (final / name).stat().st_size, "sha256": sha256_file(final / name)} for name in FILES
            },
        }
        write_json_atomic(pointer_path(run_dir, "latest"), manifest)
        if is_best:
            write_json_atomic(pointer_path(run_dir, "best"), manifest)
    except (OSError, SafetensorError) as exc:  # a full disk, a read-only directory: the manifests still name
        shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoint, which is left as it was
        previous = read_manifest(run_dir, "latest")["step"] if pointer_path(run_dir, "latest").exists() else None
        if previous is not None:
            then = (
                f"the checkpoint of step {previous} is intact; free some space or make the directory writable, "
                "then --resume"
            )
        else:  # a run without a checkpoint is removed as the error leaves it: there is nothing to resume
            then = (
                "the run had no checkpoint yet, so nothing is kept; free some space or make the directory "
                "writable and train again"
            )
        raise CheckpointError(
            f"cannot write the checkpoint of step {step} in {root} ({getattr(exc, 'strerror', None) or exc}); {then}"
        ) from None
    _remove_unnamed(run_dir)
    return final


def _named(run_dir: Path) -> set[str]:
    """The checkpoint directories that a manifest names."""
    return {read_manifest(run_dir, which)["checkpoint"] for which in POINTERS if pointer_path(run_dir, which).exists()}


def _remove_unnamed(run_dir: Path) -> None:
    named = _named(run_dir)
    for path in (run_dir / "checkpoints").iterdir():
        if f"checkpoints/{path.name}" not in named:
            shutil.rmtree(path, ignore_errors=True)


def load_training_state(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model tensors, optimizer tensors, progress) of a checkpoint, for a backend to restore."""
    try:
        return (
            load_file(directory / "model.safetensors"),
            load_file(directory / "optimizer.safetensors"),
            read_state(directory),
        )
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the checkpoint in {directory} ({exc})") from None
