"""The configuration of a run: the model (GPTConfig) and its training (TrainConfig), from presets, TOML files
and `--set key=value` overrides, in that order of precedence. The resolved configuration is saved in RUN_DIR.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

from lucidlm.errors import ConfigError
from lucidlm.inputs import MiB, read_text
from lucidlm.model.config import MAX_DIMENSION, GPTConfig, check_types, shown_integer


@dataclass
class BatchSettings:
    """What a step and an evaluation read."""

    batch_size: int = 12
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_interval: int = 250
    eval_batches: int = 20
    seed: int = 1337

    def check_batches(self) -> None:
        positive = ("batch_size", "grad_accum", "eval_interval", "eval_batches")
        check_positive(self, positive, largest={"eval_interval": 2**63 - 1})
        check_ranges(self, [("seed", 0 <= self.seed < 2**64, "must lie in [0, 2**64)")])


@dataclass
class OptimizerSettings:
    """train/optim.py: AdamW, or Muon for the blocks' matrices and AdamW for the rest."""

    optimizer: Literal["adamw", "muon"] = "adamw"
    lr: float = 1e-3  # the schedule's peak
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off
    newton_schulz_steps: int = 5  # Muon's orthogonalisation steps; 3 is cheaper and enough for short CPU runs
    muon_momentum: float = 0.95  # Muon's gradient average; AdamW's is beta1

    def check_optimizer(self) -> None:
        check_positive(self, ("newton_schulz_steps",))
        check_ranges(
            self,
            [
                ("lr", self.lr > 0, "must be positive"),
                ("weight_decay", self.weight_decay >= 0, "must be 0 or more"),
                ("beta1", 0 <= self.beta1 < 1, "must lie in [0, 1)"),
                ("beta2", 0 <= self.beta2 < 1, "must lie in [0, 1)"),
                ("grad_clip", self.grad_clip >= 0, "must be 0 (no clipping) or more"),
                ("muon_momentum", 0 <= self.muon_momentum < 1, "must lie in [0, 1)"),
            ],
        )


@dataclass
class ScheduleSettings:
    """train/schedule.py: warmup and cosine decay, by steps or by the clock; and how long the run is."""

    max_steps: int = 2000  # stop after this many optimizer steps
    decay_steps: int | None = None  # length of the cosine schedule; None means max_steps
    warmup_steps: int = 100
    min_lr: float = 1e-4
    time_budget: float | None = None  # seconds of training; the schedule then runs to this time
    # with a time budget: train at least this many steps, past the budget on a machine too slow to take them in it
    min_steps: int | None = None
    # auto: a run with a time budget measures this machine and trains the depth that the scaling law predicts
    # best for the budget (train/recipe.py); fixed: the model's size as the settings give it
    recipe: Literal["fixed", "auto"] = "fixed"
    # with recipe=auto: the val loss to reach; where the law says the time budget falls short of it on this
    # machine, the budget stretches to what it takes (`make demo`'s promise on a slow CPU)
    target_loss: float | None = None

    def check_schedule(self, lr: float) -> None:
        check_positive(self, ("max_steps",), largest={"max_steps": 2**63 - 1})
        check_ranges(
            self,
            [
                ("decay_steps", self.decay_steps is None or self.decay_steps >= 1, "must be a positive integer"),
                ("warmup_steps", self.warmup_steps >= 0, "must be 0 or more"),
                ("min_lr", 0 <= self.min_lr <= lr, f"must lie in [0, lr={lr}]"),
                (
                    "time_budget",
                    self.time_budget is None or self.time_budget > 0,
                    "must be a positive number of seconds",
                ),
                ("target_loss", self.target_loss is None or self.target_loss > 0, "must be a positive loss"),
                ("min_steps", self.min_steps is None or self.min_steps >= 1, "must be a positive integer"),
            ],
        )
        if self.target_loss is not None and (self.recipe != "auto" or self.time_budget is None):
            raise ConfigError(
                "target_loss stretches a time budget that recipe=auto sizes: add --time-budget and "
                "--set recipe=auto, or drop target_loss"
            )
        if self.min_steps is not None and self.time_budget is None:
            raise ConfigError(
                "min_steps makes a time budget train at least that many steps: add --time-budget, "
                "or give the steps alone with --max-steps"
            )


@dataclass
class LoRASettings:
    """model/lora.py: adapters on a frozen --init-from model."""

    lora_rank: int = 0  # > 0: train LoRA adapters of this rank on a frozen --init-from model
    lora_alpha: float = 16.0  # the adapters' scale is lora_alpha / lora_rank
    lora_targets: str = "attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj"  # the layers of each block that get adapters
    # with LoRA, also train the token embedding and the output layer: set by `train` when the data added tokens
    # (a chat template's), whose rows the frozen model could not learn otherwise
    lora_embeddings: bool = False

    def check_lora(self) -> None:
        check_ranges(
            self,
            [
                ("lora_rank", self.lora_rank >= 0, "must be 0 (full fine-tuning) or a positive rank such as 8"),
                ("lora_alpha", self.lora_alpha > 0, "must be positive"),
            ],
        )
        if self.lora_rank:
            from lucidlm.model.lora import parse_targets

            parse_targets(self.lora_targets)


@dataclass
class ObjectiveSettings:
    """train/objectives.py: what a step minimises. next_token (pretraining, SFT), dpo (preference data from `data
    prepare --preferences`) or grpo (task data from `data prepare --tasks`); dpo and grpo tune a trained model
    (--init-from), which is also their frozen reference."""

    objective: Literal["next_token", "dpo", "grpo"] = "next_token"
    dpo_beta: float = 0.1  # dpo: how far the policy may move from the reference (the reward's scale)
    # dpo: the weight of the chosen replies' cross-entropy added to the loss (RPO, Pang et al. 2024): DPO alone
    # may lower the chosen reply's likelihood too, as long as the rejected one's falls faster
    dpo_nll: float = 0.0
    # grpo: batch_size prompts a step, each with group_size replies sampled at sample_temperature, of at most
    # max_reply_tokens tokens, scored by `reward` (exact, number, or a Python function as module:function)
    group_size: int = 8
    sample_temperature: float = 1.0
    max_reply_tokens: int = 32
    reward: str = "exact"
    grpo_clip: float = 0.2  # grpo: the policy ratio is clipped to [1 - grpo_clip, 1 + grpo_clip]
    kl_coef: float = 0.0  # grpo: the weight of the KL penalty to the reference (0: none, and no reference kept)
    # dpo, grpo: a prepared data directory (text or chat, the same tokenizer) whose next-token loss, times
    # replay_coef, joins each step's: replaying the supervised data keeps what the model already did well while
    # the objective teaches something else (InstructGPT's PPO-ptx)
    replay_data: str | None = None
    replay_coef: float = 1.0

    def check_objective(self) -> None:
        check_positive(self, ("group_size", "max_reply_tokens"))
        check_ranges(
            self,
            [
                ("dpo_beta", self.dpo_beta > 0, "must be positive, e.g. 0.1"),
                ("dpo_nll", self.dpo_nll >= 0, "must be 0 (DPO alone) or more, e.g. 1.0"),
                ("sample_temperature", 0 < self.sample_temperature <= 10, "must lie in (0, 10], e.g. 1.0"),
                ("grpo_clip", 0 < self.grpo_clip < 1, "must lie in (0, 1), e.g. 0.2"),
                ("kl_coef", self.kl_coef >= 0, "must be 0 (no penalty) or more"),
                ("replay_coef", self.replay_coef > 0, "must be positive, e.g. 1.0"),
                (
                    "group_size",
                    self.objective != "grpo" or self.group_size >= 2,
                    "must be 2 or more: a group is its own baseline",
                ),
            ],
        )
        if self.replay_data is not None and self.objective == "next_token":
            raise ConfigError(
                "replay_data is for objective=dpo or grpo; to train next-token on two sources, prepare them into one "
                "data directory (data prepare --input takes several files)"
            )


@dataclass
class RuntimeSettings:
    """Where and how a step is computed."""

    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: Literal["auto", "fp32", "bf16"] = (
        "auto"  # the products' precision: auto (bf16 where the device does it fast)
    )
    # torch.compile for the blocks: auto (where a compiler is there and the run is long: device.training_compile)
    compile: Literal["auto", "true", "false"] = "auto"
    backend: Literal["torch", "numpy"] = "torch"  # numpy: lucidlm.scratch, the hand-written backward pass
    tracker: Literal["none", "tensorboard", "wandb", "trackio"] = "none"  # where the series also go (tracking.py)

    def check_runtime(self) -> None:
        if self.dtype == "bf16" and self.backend == "numpy":
            raise ConfigError("the numpy backend computes in float32; drop dtype=bf16 or use backend=torch")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device {self.device!r} is not one of: auto, cpu, cuda, mps")


@dataclass
class TrainConfig(RuntimeSettings, ObjectiveSettings, LoRASettings, ScheduleSettings, OptimizerSettings, BatchSettings):
    """Every training setting, in its section (the classes above); a setting keeps its one flat name, the one
    `--set name=value`, TOML files and config.json use."""

    def __post_init__(self) -> None:
        """Every training setting's type and range, checked here and nowhere else, so that a bad value from
        a preset, a TOML file, `--set` or a damaged config.json is one clear error before anything runs."""
        if isinstance(self.compile, bool):  # runs and TOML files from before compile=auto
            self.compile = str(self.compile).lower()
        check_types(self)
        self.check_batches()
        self.check_optimizer()
        self.check_schedule(self.lr)
        self.check_lora()
        self.check_objective()
        self.check_runtime()
        if self.objective != "next_token" and self.backend == "numpy":
            raise ConfigError(f"objective={self.objective} is for the torch backend; drop backend=numpy")
        if self.lora_rank and self.backend == "numpy":
            raise ConfigError("LoRA adapters are for the torch backend; drop lora_rank or use backend=torch")

    @classmethod
    def sections(cls) -> dict[str, list[str]]:
        """Each section's name and the settings in it, in the order of its class."""
        return {
            section.__name__.removesuffix("Settings").lower(): [f.name for f in fields(section)]
            for section in reversed(cls.__mro__[1:-1])
        }


def check_positive(settings, names: tuple[str, ...], largest: dict[str, int] | None = None) -> None:
    for name in names:
        most = (largest or {}).get(name, MAX_DIMENSION)
        if not 1 <= getattr(settings, name) <= most:
            raise ConfigError(
                f"{name}={shown_integer(getattr(settings, name))} must be a positive integer of at most {most:,}"
            )


def check_ranges(settings, ranges: list[tuple[str, bool, str]]) -> None:
    for name, ok, rule in ranges:
        if not ok:
            raise ConfigError(f"{name}={getattr(settings, name)!r} {rule}")


@dataclass
class RunConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init_from: str | None = None  # the model a fine-tune started from (a LoRA run's frozen base), as an absolute path

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "train": asdict(self.train), "init_from": self.init_from}

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        init_from = data.get("init_from")
        if init_from is not None and not isinstance(init_from, str):
            raise ConfigError(f"init_from={init_from!r} is not a path")
        return cls(GPTConfig.from_dict(data.get("model", {})), _build(TrainConfig, data.get("train", {})), init_from)


PRESETS: dict[str, dict[str, dict]] = {
    # nanoGPT's documented CPU recipe for Shakespeare, kept as it is so the figures compare.
    "nanogpt-baby": {
        "model": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False),
        "train": dict(
            batch_size=12,
            max_steps=2000,
            lr=1e-3,
            min_lr=1e-4,
            warmup_steps=100,
            beta2=0.99,
            eval_interval=250,
            eval_batches=20,
        ),
    },
    # The recipe `make demo` trains: nanoGPT's baby width and depth with two heads of 64 and block 256, in the
    # Llama layout (rotary positions, RMSNorm, SwiGLU) with QK-norm and an untied head, Muon (3 Newton-Schulz
    # steps) for the blocks' matrices, spending a time budget; each part earned its place by the val loss it
    # reaches in that budget (docs/benchmarks.md has the figures, by machine).
    "shakespeare-char": {
        "model": dict(
            n_layer=4,
            n_head=2,
            n_embd=128,
            block_size=256,
            dropout=0.0,
            bias=False,
            positions="rope",
            norm="rmsnorm",
            mlp="swiglu",
            qk_norm=True,
            tie_embeddings=False,
        ),
        "train": dict(
            batch_size=12,
            max_steps=100_000,
            optimizer="muon",
            newton_schulz_steps=3,
            muon_momentum=0.9,
            lr=4e-3,
            min_lr=4e-4,
            warmup_steps=50,
            beta2=0.99,
            grad_clip=0.0,
            eval_interval=500,
            eval_batches=20,
            time_budget=120.0,
            recipe="auto",
        ),
    },
    # GPT-2 small (124M), for GPUs; vocab_size comes from the data.
    "gpt2-small": {
        "model": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, dropout=0.0, bias=True),
        "train": dict(
            batch_size=12,
            grad_accum=40,
            max_steps=600_000,
            lr=6e-4,
            min_lr=6e-5,
            warmup_steps=2000,
            beta2=0.95,
            eval_interval=1000,
            eval_batches=200,
        ),
    },
    # The Llama layout at toy size: rotary positions, RMSNorm, SwiGLU, no biases, grouped-query attention.
    "llama-tiny": {
        "model": dict(
            n_layer=4,
            n_head=4,
            n_kv_head=2,
            n_embd=128,
            block_size=256,
            positions="rope",
            norm="rmsnorm",
            mlp="swiglu",
            bias=False,
            tie_embeddings=False,
        ),
        "train": dict(batch_size=12, max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100, beta2=0.99),
    },
}


# Settings that were renamed, by their former name: runs, TOML files and commands written before still work.
# ("engine" named the training backend, a word that now belongs to the serving engine alone.)
FORMER_NAMES = {"engine": "backend"}


def _current_names(values: dict) -> dict:
    return {FORMER_NAMES.get(name, name): value for name, value in values.items()}


def _build(cls, values: dict):
    values = _current_names(values)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
    return cls(**values)


def _field_types() -> dict[str, tuple[str, str]]:
    """setting name -> (section, type annotation as written)."""
    types = {}
    for section, cls in (("model", GPTConfig), ("train", TrainConfig)):
        for f in fields(cls):
            types[f.name] = (section, str(f.type))
    return types


def parse_value(name: str, annotation: str, raw: str) -> object:
    """Turn the text of `--set name=raw` into the setting's type."""
    if raw.lower() == "none" and "None" in annotation:
        return None
    try:
        if annotation.startswith("bool"):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if annotation.startswith("int"):
            return int(raw)
        if annotation.startswith("float"):
            return float(raw)
    except ValueError:
        kind = annotation.split(" ")[0]
        shown = raw if len(raw) <= 40 else f"{raw[:37]}..."
        raise ConfigError(f"--set {name}={shown}: {name} takes a {kind} value") from None
    return raw


def parse_overrides(pairs: list[str]) -> dict[str, dict]:
    """`["n_layer=6", "train.lr=3e-4"]` -> `{"model": {"n_layer": 6}, "train": {"lr": 0.0003}}`. A setting may
    be named by itself, or after "model.", "train." or its section of the training settings ("optimizer.lr")."""
    types = _field_types()
    result: dict[str, dict] = {"model": {}, "train": {}}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r} is not key=value; write e.g. --set n_layer=6")
        key, raw = pair.split("=", 1)
        name = key.strip().split(".")[-1]
        name = FORMER_NAMES.get(name, name)
        prefix = key.strip().split(".")[0] if "." in key else None
        in_section = prefix in TrainConfig.sections() and name in TrainConfig.sections()[prefix]
        if name not in types or (prefix is not None and prefix != types[name][0] and not in_section):
            raise ConfigError(f"--set {key}: unknown setting; known: {', '.join(sorted(types))}")
        section, annotation = types[name]
        result[section][name] = parse_value(name, annotation, raw.strip())
    return result


def read_toml(path: str | Path) -> dict[str, dict]:
    """A TOML file with [model] and [train] tables, or flat keys that are sorted into them by name."""
    try:
        data = tomllib.loads(read_text(path, MiB, ConfigError, "give a TOML file with [model] and [train]"))
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4,300 digits
        raise ConfigError(f"config file {path} is not valid TOML: {str(exc).splitlines()[0][:200]}") from None
    types = _field_types()
    result: dict[str, dict] = {"model": {}, "train": {}}
    for key, value in _current_names(data).items():
        if key in result and isinstance(value, dict):
            result[key].update(_current_names(value))
        elif key in types:
            result[types[key][0]][key] = value
        else:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
    return result


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> RunConfig:
    """Layer the settings: `base` (a saved config) or the preset, then the TOML file, then `--set` pairs."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    merged: dict[str, dict] = {"model": {}, "train": {}}
    layers = [base or PRESETS.get(preset or "", {})]
    if config_file:
        layers.append(read_toml(config_file))
    layers.append(parse_overrides(overrides or []))
    for layer in layers:
        for section in merged:
            merged[section].update(layer.get(section, {}))
    return RunConfig.from_dict({**merged, "init_from": (base or {}).get("init_from")})
