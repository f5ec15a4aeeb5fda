"""GPTConfig: every switch of the model in one dataclass.

GPT-2 is `positions="learned", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True`; the Llama family is
`positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head < n_head`. One model file serves both,
so a lesson can change one part and keep everything else equal.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields

from lucidlm.errors import ConfigError

POSITIONS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "relu", "swiglu", "relu2")
MAX_BLOCK_SIZE = 131_072  # Llama 3's context; a larger one is a typo (or a tampered config.json), not a plan
MAX_DIMENSION = 2**31 - 1  # any size above int32's range is a typo too (and overflows the file formats)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# What each field's annotation allows, so that a config.json, a TOML file or a --set of the wrong type is an
# error, not a crash later. Floats must be finite: no setting means anything at nan or inf.
TYPE_CHECKS = {
    "int": _is_int,
    "int | None": lambda value: value is None or _is_int(value),
    "float": _is_finite_number,
    "float | None": lambda value: value is None or _is_finite_number(value),
    "bool": lambda value: isinstance(value, bool),
    "str": lambda value: isinstance(value, str),
    "str | None": lambda value: value is None or isinstance(value, str),
    "dict | None": lambda value: value is None or isinstance(value, dict),
}
# Llama 3's RoPE scaling, with Hugging Face's key names (config.json's "rope_scaling")
LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def check_types(config) -> None:
    """Every field of the dataclass `config` against its annotation (TYPE_CHECKS, or the choices of a
    `Literal`), as one clear error."""
    hints = None
    for field in fields(config):
        value = getattr(config, field.name)
        if field.type.startswith("Literal["):
            hints = hints or typing.get_type_hints(type(config))
            choices = typing.get_args(hints[field.name])
            if value not in choices or not isinstance(value, str):
                raise ConfigError(f"{field.name} {value!r} is not one of: {', '.join(choices)}")
            continue
        if not TYPE_CHECKS[field.type](value):
            kind = "a finite number" if "float" in field.type else f"of type {field.type}"
            raise ConfigError(f"{field.name}={value!r} is not {kind}")


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64  # the longest context the model sees
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # grouped-query attention when smaller than n_head; None means n_head
    head_dim: int | None = None  # each head's size; None means n_embd / n_head (Qwen3 sets it apart)
    n_embd: int = 128
    mlp_hidden: int | None = None  # None: 4 * n_embd, or about 8/3 * n_embd for swiglu (same parameter count)
    dropout: float = 0.0
    bias: bool = False
    positions: str = "learned"
    norm: str = "layernorm"
    mlp: str = "gelu"
    tie_embeddings: bool = True
    qk_norm: bool = False  # RMSNorm on each head's queries and keys before RoPE, as in Qwen3 and OLMo 2
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "llama3", factor, ...}: Llama 3's longer-context RoPE
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_types(self)
        for name, allowed in (("positions", POSITIONS), ("norm", NORMS), ("mlp", MLPS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of: {', '.join(allowed)}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_kv_head", "head_dim", "mlp_hidden"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_DIMENSION:
                raise ConfigError(
                    f"{name}={shown_integer(value)} must be a positive integer of at most {MAX_DIMENSION:,}"
                )
        if self.block_size > MAX_BLOCK_SIZE:
            raise ConfigError(f"block_size={self.block_size} is larger than {MAX_BLOCK_SIZE}; choose a smaller one")
        if self.head_dim is None:
            if self.n_embd % self.n_head:
                raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; change one of them")
            self.head_dim = self.n_embd // self.n_head
        if self.head_dim < 1:
            raise ConfigError(f"head_dim={self.head_dim} must be a positive integer")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.n_kv_head < 1 or self.n_head % self.n_kv_head:
            raise ConfigError(
                f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}; "
                "choose n_kv_head among the divisors of n_head"
            )
        if self.positions == "rope" and self.head_dim % 2:
            raise ConfigError(f"rope needs an even head size, got head_dim={self.head_dim}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type")
            values = [self.rope_scaling.get(key) for key in LLAMA3_ROPE_KEYS]
            if kind != "llama3" or not all(_is_finite_number(v) and v > 0 for v in values):
                raise ConfigError(
                    f"rope_scaling={self.rope_scaling!r}: lucidlm has Llama 3's (rope_type llama3, with "
                    f"{', '.join(LLAMA3_ROPE_KEYS)} positive)"
                )
        if self.qk_norm and self.norm != "rmsnorm":
            raise ConfigError("qk_norm normalises queries and keys with RMSNorm; set norm=rmsnorm as well")
        if self.positions == "sinusoidal" and self.n_embd % 2:
            raise ConfigError(f"sinusoidal positions need an even n_embd, got {self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout} must lie in [0, 1)")
        if self.mlp_hidden is None:
            self.mlp_hidden = 4 * self.n_embd if self.mlp != "swiglu" else _round_up(8 * self.n_embd // 3, 32)
        if self.mlp_hidden < 1:
            raise ConfigError(f"mlp_hidden={self.mlp_hidden} must be a positive integer")
        if not (self.rope_theta > 0 and self.norm_eps > 0):
            raise ConfigError(f"rope_theta={self.rope_theta} and norm_eps={self.norm_eps} must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model setting(s): {', '.join(unknown)}")
        return cls(**data)


def shown_integer(value: int) -> str:
    """An integer for a message: a huge one (a typo, a hostile file) by its first digits and its length."""
    return str(value) if abs(value) < 10**30 else f"{str(value)[:12]}... ({len(str(abs(value)))} digits)"


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
