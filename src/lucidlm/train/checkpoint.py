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

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lucidlm.config import RunConfig
from lucidlm.data.corpus import sha256_file
from lucidlm.errors import CheckpointError, ConfigError
from lucidlm.files import COUNT, NUMBER, read_json
from lucidlm.model import GPT, GPTConfig
from lucidlm.model.gpt import check_shapes
from lucidlm.tokenizers import Tokenizer, load_tokenizer

POINTERS = ("latest", "best")
FILES = ("model.safetensors", "optimizer.safetensors", "state.json")
MANIFEST = {
    "checkpoint": str,
    "step": COUNT,
    "val_loss?": (NUMBER, None),
    "files": {"*": {"bytes": COUNT, "sha256": str}},
}
STATE = {"step": COUNT, "elapsed?": NUMBER}


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

    `model_tensors` are the weights by state-dict name; `optimizer_tensors` whatever else the engine needs to
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
        write_json_atomic(_pointer(run_dir, "latest"), manifest)
        if is_best:
            write_json_atomic(_pointer(run_dir, "best"), manifest)
    except (OSError, SafetensorError) as exc:  # a full disk, a read-only directory: the manifests still name
        shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoint, which is left as it was
        previous = read_manifest(run_dir, "latest")["step"] if _pointer(run_dir, "latest").exists() else None
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


def _pointer(run_dir: Path, which: str) -> Path:
    return Path(run_dir) / f"{which}.json"


def _named(run_dir: Path) -> set[str]:
    """The checkpoint directories that a manifest names."""
    return {read_manifest(run_dir, which)["checkpoint"] for which in POINTERS if _pointer(run_dir, which).exists()}


def _remove_unnamed(run_dir: Path) -> None:
    named = _named(run_dir)
    for path in (run_dir / "checkpoints").iterdir():
        if f"checkpoints/{path.name}" not in named:
            shutil.rmtree(path, ignore_errors=True)


def read_manifest(run_dir: str | Path, which: str) -> dict:
    path = _pointer(Path(run_dir), which)
    if not path.exists():
        raise CheckpointError(
            f"{run_dir} holds no {which} checkpoint ({path.name} is missing); "
            "give a run directory that `lucidlm train --out` wrote"
        )
    return read_json(path, MANIFEST, CheckpointError, "delete it to fall back on the other checkpoint")


def read_state(directory: Path) -> dict:
    """A checkpoint's state.json: its step, elapsed time and whatever else the engine saved."""
    return read_json(directory / "state.json", STATE, CheckpointError, "the checkpoint is damaged, train again")


def find_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """The directory of a complete checkpoint, its files checked against the manifest that names it.

    `which` is "best" (falling back to "latest" when no evaluation has happened yet), "latest", or "step-N"
    for the checkpoint of step N that a manifest names (a run keeps its latest and its best)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory; pass the --out directory of `lucidlm train`")
    if which == "best" and not _pointer(run_dir, "best").exists():
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
        if _pointer(run_dir, pointer).exists():
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


def load_model(
    run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu", dtype: str | None = None
) -> tuple[GPT, Tokenizer, RunConfig]:
    """A trained model ready for inference, with its tokenizer and configuration. `run_dir` may also be one of
    the run's `checkpoints/step-N` folders (`which` as `find_checkpoint`), or `hf:DIR`, a Hugging Face model
    directory as the Hub serves it (loaded in its stored dtype, or in `dtype`)."""
    if str(run_dir).startswith("hf:"):
        from lucidlm.export.hf import load_hf_model

        model, tokenizer, config = load_hf_model(str(run_dir)[3:], dtype)
        return model.to(device).eval(), tokenizer, RunConfig(model=config)
    run_dir, which = split_checkpoint_path(run_dir, which)
    config = read_run_config(run_dir)
    directory = find_checkpoint(run_dir, which)
    tokenizer = load_tokenizer(Path(run_dir) / "tokenizer.json")
    if config.train.lora_rank:
        return load_lora_model(run_dir, config, tokenizer, directory).to(device).eval(), tokenizer, config
    check_fits(config.model, directory / "model.safetensors")
    model = GPT(config.model)
    load_weights(model, directory / "model.safetensors")
    return model.to(device).eval(), tokenizer, config


def load_lora_model(run_dir: Path, config: RunConfig, tokenizer: Tokenizer, directory: Path) -> GPT:
    """A LoRA run's model: its base (config.json's init_from) with the checkpoint's adapters merged in."""
    from lucidlm.model.lora import add_lora, merge_lora

    if not config.init_from:
        raise CheckpointError(f"{run_dir}/config.json names no base model (init_from) for its LoRA adapters")
    try:
        _, weights, _ = load_base(config.init_from, tokenizer, what=str(run_dir))
    except (CheckpointError, ConfigError) as exc:
        raise CheckpointError(
            f"the LoRA run {run_dir} needs its base model {config.init_from}, which cannot be loaded ({exc})"
        ) from None
    model = GPT.from_state(config.model, weights)  # the base's tensors themselves, not a copy of them
    train = config.train
    add_lora(model, train.lora_rank, train.lora_alpha, train.lora_targets, train.lora_embeddings)
    try:
        model.load_saved_state(load_file(directory / "model.safetensors"), partial=True)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{directory}/model.safetensors does not hold this run's adapters ({exc})") from None
    return merge_lora(model)


def load_init(source: str) -> tuple[GPT, Tokenizer]:
    """The model and tokenizer that `--init-from` names: `hf:DIR` (a GPT-2, Llama or Qwen3 directory) or a RUN_DIR."""
    if source.startswith("hf:"):
        from lucidlm.export.hf import load_hf_model

        model, tokenizer, _ = load_hf_model(source[3:])
        return model, tokenizer
    model, tokenizer, _ = load_model(source)
    return model, tokenizer


def absolute_source(source: str) -> str:
    """`--init-from` as config.json records it: absolute, so that a LoRA run finds its base from anywhere."""
    if source.startswith("hf:"):
        return "hf:" + str(Path(source[3:]).resolve())
    return str(Path(source).resolve())


def load_base(
    source: str, tokenizer: Tokenizer | None = None, what: str = "the data"
) -> tuple[GPTConfig, dict[str, torch.Tensor], Tokenizer]:
    """(config, weights, the source's own tokenizer) of the model a fine-tune starts from, made to fit
    `tokenizer` (the data's, or a LoRA run's own): that must be the source's tokenizer, or the source's with
    special tokens added, which then get rows of their own (with_new_tokens)."""
    model, source_tokenizer = load_init(source)
    config, weights = model.config, model.state_for_saving()
    tokenizer = tokenizer or source_tokenizer
    if not tokenizer.extends(source_tokenizer):
        raise ConfigError(
            f"{what} was prepared with another tokenizer than {source}; pass a text file "
            "(it is prepared with the model's tokenizer) or data prepared with it (--tokenizer-from)"
        )
    if tokenizer.vocab_size > source_tokenizer.vocab_size:  # chat data brought the turns' special tokens
        config, weights = with_new_tokens(config, weights, source_tokenizer.vocab_size, tokenizer.vocab_size)
    return config, weights, source_tokenizer


def with_new_tokens(
    config: GPTConfig, weights: dict[str, torch.Tensor], known: int, total: int
) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """The model with rows for the token ids `known` .. `total` - 1 (new special tokens): each new row of the
    embedding and of the output layer starts as the mean of the known rows, so that a new token begins as an
    average token rather than as noise that the first steps must undo (the usual choice, e.g. in `transformers`'
    `resize_token_embeddings(mean_resizing=True)`)."""
    vocab_size = max(config.vocab_size, total)
    grown = dict(weights)
    for name in ("transformer.wte.weight", "lm_head.weight"):
        if name in weights:
            old = weights[name].float()
            rows = torch.cat([old, old.new_zeros(vocab_size - old.shape[0], old.shape[1])])
            rows[known:total] = old[:known].mean(dim=0)
            grown[name] = rows.to(weights[name].dtype)
    return dataclasses.replace(config, vocab_size=vocab_size), grown


def load_source_tokenizer(source: str | Path) -> tuple[Tokenizer, int]:
    """(tokenizer, context length) of a run or `hf:DIR`, without loading its weights (to prepare data for it)."""
    if str(source).startswith("hf:"):
        from lucidlm.export.hf import config_from_hf, load_hf_tokenizer, read_hf_config

        directory = str(source)[3:]
        return load_hf_tokenizer(directory), config_from_hf(read_hf_config(directory)).block_size
    run_dir, _ = split_checkpoint_path(source)
    config = read_run_config(run_dir)
    return load_tokenizer(Path(run_dir) / "tokenizer.json"), config.model.block_size


def check_fits(model_config: GPTConfig, path: Path) -> None:
    """Compare the model of config.json with the shapes in the weights file's header before building it, so
    that a wrong size in config.json is an error rather than an allocation of whatever size it says. The
    model is built on PyTorch's meta device (shapes only, no memory) once its layer count is known to match."""
    try:
        with safe_open(path, framework="pt") as weights:
            shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    layers = len({name.split(".")[2] for name in shapes if name.startswith("transformer.h.")})
    try:
        if model_config.n_layer != layers:
            raise ValueError(f"n_layer={model_config.n_layer}, but the weights have {layers} layers")
        with torch.device("meta"):
            expected = GPT(model_config).state_for_saving()
        check_shapes({name: tensor.shape for name, tensor in expected.items()}, shapes)
    except (ValueError, RuntimeError) as exc:  # RuntimeError: sizes too large even for shapes alone
        raise CheckpointError(f"{path} does not fit the model in config.json ({exc})") from None


def load_weights(model: GPT, path: Path) -> None:
    try:
        model.load_saved_state(load_file(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    except (ValueError, RuntimeError) as exc:  # RuntimeError: sizes too large even for shapes alone
        raise CheckpointError(f"{path} does not fit the model in config.json ({exc})") from None


def load_training_state(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model tensors, optimizer tensors, progress) of a checkpoint, for an engine to restore."""
    try:
        return (
            load_file(directory / "model.safetensors"),
            load_file(directory / "optimizer.safetensors"),
            read_state(directory),
        )
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the checkpoint in {directory} ({exc})") from None
