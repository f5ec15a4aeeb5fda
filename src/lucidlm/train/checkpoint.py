"""Checkpoints: safetensors for tensors, JSON for everything else, and no pickle anywhere.

A run directory holds
    config.json, tokenizer.json, metrics.jsonl, loss.png
    checkpoints/step-0000500/{model.safetensors, optimizer.safetensors, state.json}
    latest.json, best.json   (manifests: which checkpoint, its step, and each file's size and sha256)

A checkpoint is written into `step-N.tmp/`, renamed to `step-N/`, and only then named by a manifest, which is
itself written to a temporary file and renamed. A kill at any moment therefore leaves the previous manifest
pointing at a complete checkpoint. Directories no manifest names are removed after each save.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lucidlm.data.corpus import sha256_file
from lucidlm.errors import CheckpointError
from lucidlm.load import POINTERS, pointer_path, read_manifest, read_state

FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
