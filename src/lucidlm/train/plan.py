"""What `lucidlm train` is asked to do, decided before anything is written.

A run is new, a resume, or a fine-tune of another model (`--init-from`). `plan_run` settles which, with its
data, settings and starting weights, and checks everything that can be checked first: every setting's range,
that the output directory may be written (lucidlm.outputs), that a resumed run gets the very data it was
trained on (by the sha256 recorded in its config.json) and settings that change nothing but what the user
asked to change, that the model fits in memory. `carry_out` then claims the run directory, prepares a text
file into RUN_DIR/data, and trains; a failure before the first checkpoint leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lucidlm.data.corpus import iter_text, text_sha256
from lucidlm.data.loader import data_kind, read_meta
from lucidlm.data.prepare import Source, prepare
from lucidlm.errors import CheckpointError, ConfigError, DataError
from lucidlm.load import ModelSource, load_base
from lucidlm.model import GPTConfig
from lucidlm.outputs import RUN_DIR, check_target, holds_run, run_directory
from lucidlm.run_config import RunConfig, TrainConfig, parse_overrides, resolve_config
from lucidlm.runs import find_checkpoint, read_manifest, read_run_config, read_run_config_json, read_state
from lucidlm.scaling_law import count_parameters
from lucidlm.tokenizers import CharTokenizer, Tokenizer, load_tokenizer
from lucidlm.train.schedule import time_progress
from lucidlm.train.trainer import TrainResult, train

DEFAULT_PRESET = "shakespeare-char"
# recipe=auto's law was fitted on a corpus of a million tokens: on a much smaller one (a test's, a note's) it
# says nothing worth a measurement, and the preset's shape trains
MIN_RECIPE_TOKENS = 100_000
# bytes per parameter while training: fp32 weights, gradients and AdamW's two moments
TRAINING_BYTES_PER_PARAMETER = 16


@dataclass
class RunPlan:
    data: Path  # a prepared data directory, or a text file to prepare into RUN_DIR/data
    run_dir: Path
    config: RunConfig
    resume: bool = False
    force: bool = False
    tokenizer: Tokenizer | None = None  # what a text file is prepared with (None: a char tokenizer learned from it)
    init_weights: dict[str, torch.Tensor] | None = None
    nothing_to_do: str | None = None  # set when a resumed run has already reached its end
    recipe: dict | None = None  # what recipe=auto measured and chose (train/recipe.py), for config.json

    @property
    def text_input(self) -> bool:
        return not self.data.is_dir()


def plan_run(
    data: str | os.PathLike,
    out: str | os.PathLike,
    preset: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    init_from: str | None = None,
    resume: bool = False,
    force: bool = False,
) -> RunPlan:
    """Decide and check the run; nothing is written."""
    data, out, overrides = Path(data), Path(out), list(overrides or [])
    if data.is_dir():
        read_meta(data)  # a directory must be a prepared one
    elif not data.is_file():
        raise DataError(f"--data {data}: no such file or directory")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not data.is_dir():
        raise ConfigError(
            "under torchrun, --data must be a prepared DATA_DIR (run `lucidlm data prepare` first), "
            "so that the processes do not prepare the same files at once"
        )
    if init_from and resume:
        raise ConfigError("--init-from starts a new run; drop --resume (or drop --init-from to continue)")
    if resume:
        if force:
            raise ConfigError("--resume continues a run and --force replaces one; give one of them")
        plan = _plan_resume(data, out, preset, config_file, overrides)
    else:
        check_target(out, RUN_DIR, force)
        if init_from:
            plan = _plan_init(data, out, preset, config_file, overrides, init_from)
        else:
            vocab_size = _vocab_size(data)
            config = resolve_config(preset or DEFAULT_PRESET, config_file, _with_vocab(vocab_size, overrides))
            if config.train.lora_rank:
                raise ConfigError("LoRA adapts a trained model: add --init-from RUN_DIR or hf:DIR, or drop lora_rank")
            plan = RunPlan(data, out, config)
            if _recipe_applies(config, config_file, overrides):
                train_tokens = _train_tokens(data)
                if train_tokens >= MIN_RECIPE_TOKENS:
                    from lucidlm.train.recipe import fit_to_machine

                    plan.config, plan.recipe = fit_to_machine(config, train_tokens)
        plan.force = force
    check_objective(plan.config, data)
    check_fits_in_memory(plan.config)
    return plan


# the data each objective trains on, and how to prepare it
OBJECTIVE_DATA = {
    "dpo": ("preferences", "data prepare --preferences FILE.jsonl --tokenizer-from RUN"),
    "grpo": ("tasks", "data prepare --tasks FILE.jsonl --tokenizer-from RUN"),
}


def check_objective(config: RunConfig, data: Path) -> None:
    """The data fits the objective: preference pairs for DPO, tasks for GRPO, text or chat for next-token; and
    DPO and GRPO tune a trained model."""
    objective = config.train.objective
    kind = data_kind(data) if data.is_dir() else "text"
    wanted, how = OBJECTIVE_DATA.get(objective, (None, None))
    if wanted and kind != wanted:
        raise ConfigError(
            f"objective={objective} trains on {wanted} data, and {data} holds {kind}; prepare it with `lucidlm {how}`"
        )
    if not wanted and kind in ("preferences", "tasks"):
        objective_of = next(name for name, (needed, _) in OBJECTIVE_DATA.items() if needed == kind)
        raise ConfigError(f"{data} holds {kind}, which train with --set objective={objective_of}")
    if wanted and config.init_from is None:
        raise ConfigError(f"objective={objective} tunes a trained model: add --init-from RUN_DIR or hf:DIR")
    block, reply = config.model.block_size, config.train.max_reply_tokens
    if objective == "grpo" and reply >= block:
        raise ConfigError(
            f"max_reply_tokens={reply} cannot fit in the window of block_size={block} beside a prompt; use at most "
            f"{block - 1} (a reply is cut where the window ends after a long prompt)"
        )
    if config.train.replay_data is not None:
        check_replay_data(Path(config.train.replay_data), data)


def check_replay_data(replay: Path, data: Path) -> None:
    """Replay data is prepared text or chat data in the same tokens as the objective's data."""
    if not (replay / "meta.json").is_file():
        raise ConfigError(
            f"replay_data={replay} is not a prepared data directory; prepare it with `lucidlm data prepare` "
            f"(--chat FILE.jsonl --tokenizer-from RUN for chat data)"
        )
    kind = data_kind(replay)
    if kind not in ("text", "chat"):
        raise ConfigError(f"replay_data={replay} holds {kind}; replay text or chat data, whose next tokens are learned")
    if not load_tokenizer(replay / "tokenizer.json").matches_file(data / "tokenizer.json"):
        raise ConfigError(
            f"replay_data={replay} was prepared with another tokenizer than {data}; prepare it with "
            "--tokenizer-from the run you tune"
        )


def carry_out(plan: RunPlan, progress: bool | None = None) -> TrainResult:
    """Train as planned: claim the run directory (rank 0 only, under torchrun), prepare a text file, train."""
    if plan.resume or int(os.environ.get("RANK", "0")) != 0:
        return _train(plan, progress)
    with run_directory(plan.run_dir, plan.force):
        return _train(plan, progress)


def _train(plan: RunPlan, progress: bool | None) -> TrainResult:
    data_dir = plan.data
    if plan.text_input:
        data_dir = plan.run_dir / "data"
        if not (plan.resume and data_dir.is_dir()):
            prepare([Source(plan.data, str(plan.data))], data_dir, "char", progress=progress, tokenizer=plan.tokenizer)
    notes = {"recipe": plan.recipe} if plan.recipe else None
    return train(data_dir, plan.run_dir, plan.config, plan.resume, progress, plan.init_weights, notes)


# --- the three kinds of run ---------------------------------------------------------------------------------


def _plan_resume(
    data: Path, out: Path, preset: str | None, config_file: str | os.PathLike | None, overrides: list[str]
) -> RunPlan:
    if not holds_run(out):
        raise CheckpointError(
            f"{out} holds no run to resume (no config.json and latest.json); drop --resume to start one"
        )
    saved = read_run_config(out)
    tokenizer = load_tokenizer(out / "tokenizer.json")
    _check_same_data(data, out, tokenizer)
    config = resolve_config(base=saved.to_dict(), overrides=overrides)
    changed = changed_settings(saved, config, "model")
    if changed:
        raise ConfigError(
            f"--resume cannot change the model ({', '.join(changed)}); start a new run with another --out"
        )
    if preset or config_file:
        # the command that started the run, run again with --resume: fine as long as it changes nothing
        asked = resolve_config(preset or DEFAULT_PRESET, config_file, _with_vocab(tokenizer.vocab_size, overrides))
        changed = changed_settings(config, asked, "model") + changed_settings(config, asked, "train")
        if config.train.recipe == "auto":  # the size is what the recipe chose for the machine, not the preset's
            from lucidlm.train.recipe import SIZE_SETTINGS

            changed = [change for change in changed if change.split(" ")[0] not in SIZE_SETTINGS]
        if changed:
            raise ConfigError(
                f"--resume keeps the run's settings, and --preset/--config would change {', '.join(changed)}; "
                "drop them (change training settings with --set or --max-steps)"
            )
    plan = RunPlan(data, out, config, resume=True, tokenizer=tokenizer)
    # the frozen base of a LoRA run, and DPO's and GRPO's reference, come back from where the run started
    if config.train.lora_rank or config.train.objective != "next_token":
        plan.init_weights = load_base(config.init_from, tokenizer, what=str(out))[1]
    latest = read_manifest(out, "latest")
    state = read_state(find_checkpoint(out, "latest"))
    budget = config.train.time_budget
    if latest["step"] >= config.train.max_steps:
        plan.nothing_to_do = (
            f"{out} is already at step {latest['step']} of max_steps={config.train.max_steps}: nothing to train; "
            "raise --max-steps to go on"
        )
    elif budget is not None and time_progress(latest["step"], state.get("elapsed", 0.0), config.train) >= 1:
        plan.nothing_to_do = (
            f"{out} has already spent its time budget of {budget:g} s: nothing to train; raise --time-budget to go on"
        )
    return plan


def _check_same_data(data: Path, out: Path, tokenizer: Tokenizer) -> None:
    """The data of a resume must be the run's own: its sources' sha256 as config.json records them, or (for
    runs written before that record) at least the same tokenizer."""
    recorded = read_run_config_json(out).get("data_sources")
    if data.is_dir():
        if recorded is not None:
            same = [s["sha256"] for s in read_meta(data)["sources"]] == [s["sha256"] for s in recorded]
        else:
            same = tokenizer.matches_file(data / "tokenizer.json")
    else:
        same = recorded is not None and [text_sha256(data)] == [s["sha256"] for s in recorded]
    if not same:
        raise ConfigError(
            f"{data} is not the data {out} was trained on (its sha256 differs from the one {out}/config.json "
            "records); resume with the same --data, or start a new run with another --out"
        )


def _plan_init(
    data: Path,
    out: Path,
    preset: str | None,
    config_file: str | os.PathLike | None,
    overrides: list[str],
    init_from: str,
) -> RunPlan:
    """`--init-from`: the model (shape and weights) and tokenizer come from the source; the data is tokenized
    with that tokenizer; only the training settings (and dropout) come from the preset, --config and --set."""
    model_settings = sorted(name for name in parse_overrides(overrides)["model"] if name != "dropout")
    if model_settings:
        raise ConfigError(f"the model's shape comes from --init-from; drop --set {', '.join(model_settings)}")
    config = resolve_config(preset or DEFAULT_PRESET, config_file, overrides)
    data_tokenizer = load_tokenizer(data / "tokenizer.json") if data.is_dir() else None
    model_config, weights, tokenizer = load_base(init_from, data_tokenizer, what=str(data))
    config.model = dataclasses.replace(model_config, dropout=config.model.dropout)
    config.init_from = ModelSource.parse(init_from).absolute()
    if config.train.lora_rank and data_tokenizer and data_tokenizer.vocab_size > tokenizer.vocab_size:
        config.train.lora_embeddings = True
    return RunPlan(data, out, config, tokenizer=tokenizer, init_weights=weights)


# --- helpers ------------------------------------------------------------------------------------------------


def _vocab_size(data: Path) -> int:
    """The vocabulary the model needs: the prepared data's, or that of the char tokenizer a text file gets."""
    if data.is_dir():
        return read_meta(data)["vocab_size"]
    vocab_size = CharTokenizer.train(iter_text(data)).vocab_size
    if vocab_size == 0:
        raise DataError(f"{data} is empty; give a file that contains text")
    return vocab_size


def _recipe_applies(config: RunConfig, config_file: str | os.PathLike | None, overrides: list[str]) -> bool:
    """recipe=auto sizes a new run of the torch backend with a time budget, in one process, on a corpus of the
    size the law was fitted on or more, unless a size was set explicitly."""
    from lucidlm.run_config import read_toml
    from lucidlm.train.recipe import SIZE_SETTINGS

    explicit = set(parse_overrides(overrides)["model"])
    if config_file:
        explicit |= set(read_toml(config_file)["model"])
    return (
        config.train.recipe == "auto"
        and config.train.time_budget is not None
        and not explicit & set(SIZE_SETTINGS)
        and config.train.backend == "torch"
        and int(os.environ.get("WORLD_SIZE", "1")) == 1  # every process would have to choose alike
    )


def _train_tokens(data: Path) -> int:
    """The training split's tokens: the prepared data's, or (a text file, char tokens) nine tenths of its characters."""
    if data.is_dir():
        return read_meta(data)["train_tokens"]
    return sum(len(chunk) for chunk in iter_text(data)) * 9 // 10


def _with_vocab(vocab_size: int, overrides: list[str]) -> list[str]:
    """The data's vocabulary size, unless the user set one (a larger one pads the embedding, e.g. to 50304)."""
    if any(pair.split("=", 1)[0].split(".")[-1] == "vocab_size" for pair in overrides):
        return overrides
    return [f"vocab_size={vocab_size}", *overrides]


def changed_settings(before: RunConfig, after: RunConfig, section: str) -> list[str]:
    """`name (old -> new)` for each setting of `section` ("model" or "train") that differs."""
    old, new = before.to_dict()[section], after.to_dict()[section]
    return [f"{name} ({old[name]!r} -> {new[name]!r})" for name in old if old[name] != new[name]]


def activation_bytes(model: GPTConfig, batch_size: int) -> int:
    """What a training step's forward pass keeps for the backward, for one micro-batch in fp32: Korthikanti et
    al. (2022) count 34 C + 5 H T values of 2 bytes a token and layer (the second term is the attention
    matrix), and the logits and their gradient add about 3 V of 4 bytes a token."""
    tokens = batch_size * model.block_size
    per_layer = (34 * model.n_embd + 5 * model.n_head * model.block_size) * 2 * 2
    return tokens * (model.n_layer * per_layer + 12 * model.vocab_size)


def check_fits_in_memory(config: RunConfig) -> None:
    """Refuse a run whose training cannot fit in this machine's memory, before allocating any of it: the
    model's weights, gradients and optimizer state, and (training on the CPU, where they share that memory)
    one micro-batch's activations."""
    parameters = count_parameters(config.model)
    state = parameters * TRAINING_BYTES_PER_PARAMETER
    available = physical_memory()
    if available and state > available:
        raise ConfigError(
            f"a model of {parameters:,} parameters needs about {gib(state)} GiB to train (weights, "
            f"gradients and optimizer state), more than this machine's {gib(available)} GiB; "
            "choose smaller n_embd, n_layer or vocab_size"
        )
    train = config.train
    activations = activation_bytes(config.model, sequences_per_micro_batch(train))
    if available and train.device in ("auto", "cpu") and state + activations > available:
        what = f"batch_size={train.batch_size}"
        lower = "lower batch_size (raise grad_accum to keep the tokens per step)"
        if train.objective == "grpo":
            what, lower = f"{what} prompts with group_size={train.group_size} replies each", "lower one of them"
        raise ConfigError(
            f"{what} of {config.model.block_size} tokens needs about {gib(activations)} GiB of activations beside "
            f"the model's {gib(state)} GiB, more than this machine's {gib(available)} GiB; {lower}"
        )


def sequences_per_micro_batch(train: TrainConfig) -> int:
    """The sequences one micro-batch's forward and backward pass holds: DPO scores a chosen and a rejected reply
    for each pair, GRPO a group of replies for each prompt, and replayed data adds a batch of its own."""
    per_record = {"dpo": 2, "grpo": train.group_size}.get(train.objective, 1)
    return train.batch_size * per_record + (train.batch_size if train.replay_data else 0)


def gib(size: int) -> str:
    return f"{size / 2**30:,.1f}"


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
