"""Loading a trained model for use: "RUN_DIR | RUN_DIR/checkpoints/step-N | hf:DIR" turned into a model and its
tokenizer, in one place, from one parsed source (as nanochat's `checkpoint_manager.load_model`). Generate, chat,
serve, eval, export and `--init-from` come here; runs.py owns the run directory's format."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from lucidlm.errors import CheckpointError, ConfigError
from lucidlm.interop.hf_import import load_hf_model, load_hf_tokenizer, read_hf_config
from lucidlm.interop.hf_layout import config_from_hf
from lucidlm.model import GPT, GPTConfig
from lucidlm.model.gpt import check_shapes
from lucidlm.run_config import RunConfig
from lucidlm.runs import find_checkpoint, read_run_config, split_checkpoint_path
from lucidlm.tokenizers import Tokenizer, load_tokenizer

HUB = "hf:"  # the prefix that names a Hugging Face model directory

# --- a model for use ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """What `--checkpoint`, `--init-from` and `--tokenizer-from` name, parsed once: a run (its directory and
    which checkpoint: best, latest or step-N) or a Hugging Face directory."""

    path: Path
    hub: bool
    which: str = "best"

    @classmethod
    def parse(cls, text: str | os.PathLike, which: str = "best") -> ModelSource:
        """`hf:DIR`, a run directory, or one of its `checkpoints/step-N` folders (which then says the step)."""
        if str(text).startswith(HUB):
            return cls(Path(str(text)[len(HUB) :]), hub=True, which=which)
        run_dir, which = split_checkpoint_path(text, which)
        return cls(Path(run_dir), hub=False, which=which)

    @property
    def name(self) -> str:
        """The model's name for a server's clients: its directory's name."""
        return self.path.resolve().name

    def absolute(self) -> str:
        """The source as config.json records `init_from`: absolute, so that a LoRA run finds its base from
        anywhere."""
        return (HUB if self.hub else "") + str(self.path.resolve())


def load_model(
    source: str | os.PathLike | ModelSource,
    which: str = "best",
    device: str | torch.device = "cpu",
    dtype: str | None = None,
) -> tuple[GPT, Tokenizer, RunConfig]:
    """A trained model ready for inference, with its tokenizer and configuration. `source` is a run directory
    (`which` as `find_checkpoint`), one of its `checkpoints/step-N` folders, or `hf:DIR`, a Hugging Face model
    directory as the Hub serves it (loaded in its stored dtype, or in `dtype`)."""
    source = source if isinstance(source, ModelSource) else ModelSource.parse(source, which)
    if source.hub:
        model, tokenizer, config = load_hf_model(source.path, dtype)
        return model.to(device).eval(), tokenizer, RunConfig(model=config)
    run_dir = source.path
    config = read_run_config(run_dir)
    directory = find_checkpoint(run_dir, source.which)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
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
    model, tokenizer, _ = load_model(source)
    return model, tokenizer


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


def load_source_tokenizer(source: str | os.PathLike) -> tuple[Tokenizer, int]:
    """(tokenizer, context length) of a run or `hf:DIR`, without loading its weights (to prepare data for it)."""
    source = ModelSource.parse(source)
    if source.hub:
        return load_hf_tokenizer(source.path), config_from_hf(read_hf_config(source.path)).block_size
    return load_tokenizer(source.path / "tokenizer.json"), read_run_config(source.path).model.block_size


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
