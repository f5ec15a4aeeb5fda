"""To and from Hugging Face `transformers`: the GPT-2 layout (GPT2LMHeadModel), the Llama layout
(LlamaForCausalLM) and Qwen3's (Qwen3ForCausalLM).

Our GPT is one model with switches; each Hugging Face family fixes the switches. The GPT-2 layout is learned
positions, LayerNorm and a GELU/ReLU/ReLU² MLP; the Llama layout is rotary positions, RMSNorm and SwiGLU, with
grouped-query attention; Qwen3 is the Llama layout with QK-norm (`qk_norm=true`) and no MLP biases. A
configuration no family expresses is refused with the switch to change.
The weights are the same numbers under other names, with two differences: GPT-2 stores its linear layers as
Conv1D, (in, out) instead of (out, in), so they are transposed; Llama keeps q/k/v and gate/up as separate
matrices where we fuse them, so they are split. Absent biases are written as zeros (GPT-2 always has them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from lucidlm.chat.template import chat_template
from lucidlm.errors import CheckpointError, ConfigError
from lucidlm.files import COUNT, read_json
from lucidlm.memory import return_freed_memory
from lucidlm.model import GPT, GPTConfig
from lucidlm.model.config import LLAMA3_ROPE_KEYS
from lucidlm.outputs import HF_EXPORT, written_directory
from lucidlm.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, load_tokenizer
from lucidlm.tokenizers.base import added_tokens_json
from lucidlm.tokenizers.hf import HFTokenizer, load_hf_directory_tokenizer, read_tokenizer_file

GPT2_ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "relu2": "relu2"}  # ours -> transformers' name


# Our fused matrices and the Llama matrices they hold, stacked along the output axis in this order.
LLAMA_PARTS = {
    "attn.c_attn": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    "attn.c_proj": ["self_attn.o_proj"],
    "mlp.c_fc": ["mlp.gate_proj", "mlp.up_proj"],
    "mlp.c_proj": ["mlp.down_proj"],
}

QK_NORMS = ("q_norm", "k_norm")  # the same names in both

# Each family's model class in transformers, as config.json's "architectures" names it.
ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def family(config: GPTConfig) -> str:
    """ "gpt2", "llama" or "qwen3": the Hugging Face family that can hold this configuration exactly."""
    if config.positions == "learned" and config.norm == "layernorm" and config.mlp in GPT2_ACTIVATIONS:
        if config.n_kv_head != config.n_head:
            raise ConfigError(f"the GPT-2 layout has no grouped-query attention; set n_kv_head={config.n_head}")
        return "gpt2"
    if config.positions == "rope" and config.norm == "rmsnorm" and config.mlp == "swiglu":
        if not config.qk_norm:
            return "llama"
        if config.bias:
            raise ConfigError("Qwen3, the layout with qk_norm, has no MLP biases; set bias=false")
        return "qwen3"
    gpt2 = "positions=learned, norm=layernorm, mlp=gelu|relu|relu2"
    llama = "positions=rope, norm=rmsnorm, mlp=swiglu"
    raise ConfigError(
        f"neither GPT-2 ({gpt2}) nor Llama ({llama}) can hold positions={config.positions}, "
        f"norm={config.norm}, mlp={config.mlp}; train with the switches of one of them"
    )


# --- configuration ------------------------------------------------------------------------------------------
def hf_config(config: GPTConfig, eos_token_id: int | None) -> dict:
    common = {
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }
    kind = family(config)
    if kind == "gpt2":
        return {
            **common,
            "model_type": "gpt2",
            "architectures": [ARCHITECTURES["gpt2"]],
            "n_positions": config.block_size,
            "n_embd": config.n_embd,
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "n_inner": config.mlp_hidden,
            "activation_function": GPT2_ACTIVATIONS[config.mlp],
            "layer_norm_epsilon": config.norm_eps,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
        }
    llama_like = {
        **common,
        "model_type": kind,
        "architectures": [ARCHITECTURES[kind]],
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        # transformers 4 reads rope_theta, transformers 5 rope_parameters
        "rope_theta": config.rope_theta,
        "rope_scaling": config.rope_scaling,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta, **(config.rope_scaling or {})},
        "attention_bias": config.bias,
    }
    if kind == "qwen3":
        return {**llama_like, "use_sliding_window": False}
    return {**llama_like, "mlp_bias": config.bias}


def config_from_hf(data: dict) -> GPTConfig:
    kind = data.get("model_type")
    tie = data.get("tie_word_embeddings", kind == "gpt2")
    if kind == "gpt2":
        activation = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu", "relu2": "relu2"}
        if data.get("activation_function", "gelu_new") not in activation:
            raise ConfigError(f"GPT-2 activation {data['activation_function']!r} is not one lucidlm has")
        return GPTConfig(
            vocab_size=data["vocab_size"],
            block_size=data["n_positions"],
            n_layer=data["n_layer"],
            n_head=data["n_head"],
            n_embd=data["n_embd"],
            mlp_hidden=data.get("n_inner"),
            bias=True,
            positions="learned",
            norm="layernorm",
            mlp=activation[data.get("activation_function", "gelu_new")],
            tie_embeddings=tie,
            norm_eps=data.get("layer_norm_epsilon", 1e-5),
        )
    if kind in ("llama", "qwen3"):
        if data.get("use_sliding_window"):
            raise ConfigError("sliding-window attention is not supported; only full causal attention")
        rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise ConfigError(f"rope scaling {rope_type!r} is not supported; lucidlm has plain RoPE and Llama 3's")
        scaling = (
            {"rope_type": "llama3", **{k: rope.get(k) for k in LLAMA3_ROPE_KEYS}} if rope_type == "llama3" else None
        )
        heads, hidden = data["num_attention_heads"], data["hidden_size"]
        if data.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"Llama activation {data['hidden_act']!r} is not supported; only silu")
        bias = bool(data.get("attention_bias", False))
        if bool(data.get("mlp_bias", False)) != bias:
            raise ConfigError("attention_bias and mlp_bias differ; lucidlm has one bias switch for both")
        return GPTConfig(
            vocab_size=data["vocab_size"],
            block_size=data["max_position_embeddings"],
            n_layer=data["num_hidden_layers"],
            n_head=heads,
            n_kv_head=data.get("num_key_value_heads", heads),
            n_embd=hidden,
            mlp_hidden=data["intermediate_size"],
            bias=bias,
            positions="rope",
            norm="rmsnorm",
            mlp="swiglu",
            tie_embeddings=tie,
            qk_norm=kind == "qwen3",
            head_dim=data.get("head_dim") or hidden // heads,
            norm_eps=data.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", data.get("rope_theta", 10000.0))),
            rope_scaling=scaling,
        )
    raise ConfigError(f"model_type {kind!r} is not one lucidlm reads; it reads gpt2, llama and qwen3")


# --- weights ------------------------------------------------------------------------------------------------
def to_hf_state(config: GPTConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict (as `state_for_saving` gives it) under the Hugging Face family's names and layouts."""
    out: dict[str, torch.Tensor] = {}
    C, hidden = config.n_embd, config.mlp_hidden
    q_size, kv_size = config.n_head * config.head_dim, config.n_kv_head * config.head_dim

    def bias(name: str, size: int) -> torch.Tensor:
        return state.get(name, torch.zeros(size))

    if family(config) == "gpt2":
        out["transformer.wte.weight"] = state["transformer.wte.weight"]
        out["transformer.wpe.weight"] = state["transformer.wpe.weight"]
        for i in range(config.n_layer):
            ours, theirs = f"transformer.h.{i}.", f"transformer.h.{i}."
            for norm in ("ln_1", "ln_2"):
                out[theirs + f"{norm}.weight"] = state[ours + f"{norm}.weight"]
                out[theirs + f"{norm}.bias"] = bias(ours + f"{norm}.bias", C)
            for linear in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                weight = state[ours + f"{linear}.weight"]
                out[theirs + f"{linear}.weight"] = weight.t().contiguous()  # Conv1D stores (in, out)
                out[theirs + f"{linear}.bias"] = bias(ours + f"{linear}.bias", weight.shape[0])
        out["transformer.ln_f.weight"] = state["transformer.ln_f.weight"]
        out["transformer.ln_f.bias"] = bias("transformer.ln_f.bias", C)
    else:
        out["model.embed_tokens.weight"] = state["transformer.wte.weight"]
        for i in range(config.n_layer):
            ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
            out[theirs + "input_layernorm.weight"] = state[ours + "ln_1.weight"]
            out[theirs + "post_attention_layernorm.weight"] = state[ours + "ln_2.weight"]
            if config.qk_norm:
                for norm in QK_NORMS:
                    out[theirs + f"self_attn.{norm}.weight"] = state[ours + f"attn.{norm}.weight"]
            sizes = {
                "attn.c_attn": [q_size, kv_size, kv_size],
                "attn.c_proj": [C],
                "mlp.c_fc": [hidden, hidden],
                "mlp.c_proj": [C],
            }
            for fused, names in LLAMA_PARTS.items():
                parts = state[ours + f"{fused}.weight"].split(sizes[fused], dim=0)
                biases = state[ours + f"{fused}.bias"].split(sizes[fused]) if config.bias else [None] * len(names)
                for name, weight, part_bias in zip(names, parts, biases, strict=True):
                    out[theirs + f"{name}.weight"] = weight.contiguous()
                    if part_bias is not None:
                        out[theirs + f"{name}.bias"] = part_bias.contiguous()
        out["model.norm.weight"] = state["transformer.ln_f.weight"]
    if not config.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return out


def from_hf_state(config: GPTConfig, hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `to_hf_state`: a Hugging Face state dict under our names and layouts."""
    state: dict[str, torch.Tensor] = {}
    if family(config) == "gpt2":
        for name, value in hf.items():
            if name.endswith(".attn.bias") or name.endswith(".attn.masked_bias"):
                continue  # old transformers saved the causal mask as a buffer
            is_conv = name.endswith(".weight") and any(k in name for k in ("c_attn", "c_proj", "c_fc"))
            state[name] = value.t().contiguous() if is_conv else value
    else:
        state["transformer.wte.weight"] = hf["model.embed_tokens.weight"]
        for i in range(config.n_layer):
            ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
            state[ours + "ln_1.weight"] = hf[theirs + "input_layernorm.weight"]
            state[ours + "ln_2.weight"] = hf[theirs + "post_attention_layernorm.weight"]
            if config.qk_norm:
                for norm in QK_NORMS:
                    state[ours + f"attn.{norm}.weight"] = hf[theirs + f"self_attn.{norm}.weight"]
            for fused, names in LLAMA_PARTS.items():
                state[ours + f"{fused}.weight"] = torch.cat([hf[theirs + f"{n}.weight"] for n in names])
                if config.bias:
                    state[ours + f"{fused}.bias"] = torch.cat([hf[theirs + f"{n}.bias"] for n in names])
        state["transformer.ln_f.weight"] = hf["model.norm.weight"]
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)
    else:
        state["lm_head.weight"] = hf["lm_head.weight"]
    return state


# --- tokenizers ---------------------------------------------------------------------------------------------
def hf_tokenizer_json(tokenizer: Tokenizer) -> dict:
    """tokenizer.json in the `tokenizers` format. BPE already is; char and word become a WordLevel model whose
    pre-tokenizer splits text the way ours does, with a decoder that joins the pieces unchanged."""
    if isinstance(tokenizer, (BPETokenizer, HFTokenizer)):
        return tokenizer.to_dict()
    if tokenizer.kind == "char":
        pattern, vocab, unknown = r"[\s\S]", tokenizer.chars, None
    else:
        pattern, vocab, unknown = r"\w+|\s+|[^\w\s]", tokenizer.vocab, tokenizer.vocab[0]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens_json(tokenizer.special_tokens),
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "WordLevel",
            "vocab": {token: i for i, token in enumerate(vocab)},
            "unk_token": unknown if unknown else "",
        },
    }


def _eos(tokenizer: Tokenizer) -> tuple[str | None, int | None]:
    if not tokenizer.eos_ids:
        return None, None
    return tokenizer.decode(tokenizer.eos_ids[:1]), tokenizer.eos_ids[0]


# --- directories --------------------------------------------------------------------------------------------
def export_hf(model: GPT, tokenizer: Tokenizer, out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Write a directory that `transformers.AutoModelForCausalLM.from_pretrained` and `AutoTokenizer` load.
    An existing `out_dir` is refused unless it is an earlier export and `force` is given (lucidlm.outputs)."""
    config = model.config
    family(config)  # refuse early, before anything is written
    with written_directory(out_dir, HF_EXPORT, force) as tmp:
        _write_hf_files(model, tokenizer, tmp)
    return Path(out_dir)


def _write_hf_files(model: GPT, tokenizer: Tokenizer, tmp: Path) -> None:
    config = model.config
    eos_text, eos_id = _eos(tokenizer)
    state = {name: t.detach().cpu().float().contiguous() for name, t in model.state_for_saving().items()}
    save_file(to_hf_state(config, state), tmp / "model.safetensors", metadata={"format": "pt"})
    files = {
        # "exported_by" marks the directory as lucidlm's own, which `--force` may replace (lucidlm.outputs)
        "config.json": {**hf_config(config, eos_id), "exported_by": "lucidlm"},
        "tokenizer.json": hf_tokenizer_json(tokenizer),
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": config.block_size,
            "clean_up_tokenization_spaces": False,
            "eos_token": eos_text,
            "bos_token": eos_text,
            **({"chat_template": template} if (template := chat_template(tokenizer)) else {}),
        },
        "generation_config.json": {
            "bos_token_id": eos_id,
            # every id that ends a text: a chat model's end of turn too, so that `generate` stops after a reply
            "eos_token_id": tokenizer.eos_ids if len(tokenizer.eos_ids) > 1 else eos_id,
            "max_length": config.block_size,
            "do_sample": True,
            "temperature": 0.8,
            "top_k": 50,
        },
    }
    for name, data in files.items():
        (tmp / name).write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class LazyWeights(Mapping):
    """The tensors of a model's safetensors files, each read from disk when it is asked for (and cast to
    `dtype`, where one is asked for), so that converting them never holds the files' tensors and ours at once.

    The file is read with plain reads into each tensor's own memory. `safetensors.safe_open` maps the whole file
    instead, and while the map is open every page read through it stays in the process's memory: with the
    converted tensors beside them, a 500 MB model peaked at 2x its size. The format is a little-endian u64
    header length, a JSON header ({name: {dtype, shape, data_offsets}}), then the bytes."""

    def __init__(self, files: list[Path], dtype: torch.dtype | None):
        self.dtype, self.entries = dtype, {}
        for path in files:
            with open(path, "rb") as f:
                length = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(length))
            header.pop("__metadata__", None)
            for name, entry in header.items():
                self.entries[name] = (path, 8 + length, entry)

    def __getitem__(self, name: str) -> torch.Tensor:
        path, data_start, entry = self.entries[name]
        if entry["dtype"] not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} is {entry['dtype']}; lucidlm reads F32, F16 and BF16")
        start, end = entry["data_offsets"]
        return_freed_memory()  # what converting the previous tensor freed
        raw = torch.empty(end - start, dtype=torch.uint8)
        with open(path, "rb") as f:
            f.seek(data_start + start)
            if f.readinto(raw.numpy()) != end - start:
                raise CheckpointError(f"{path} is truncated (tensor {name})")
        tensor = raw.view(SAFETENSORS_DTYPES[entry["dtype"]]).reshape(entry["shape"])
        return tensor if self.dtype is None else tensor.to(self.dtype)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def weight_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards its index names; pickled .bin weights are refused, never read."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            return [directory / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{index} is not a safetensors index ({exc})") from None
    if (directory / "model.safetensors").exists():
        return [directory / "model.safetensors"]
    pickled = sorted(p.name for p in directory.glob("*.bin"))
    if pickled:
        raise CheckpointError(
            f"{directory} has only pickled weights ({pickled[0]}); lucidlm never unpickles files, convert them to "
            "safetensors (transformers: model.save_pretrained(dir, safe_serialization=True))"
        )
    raise CheckpointError(f"{directory} has no model.safetensors; give a Hugging Face model directory")


def read_hf_config(directory: str | os.PathLike) -> dict:
    """A Hugging Face directory's config.json."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise CheckpointError(f"{directory} has no config.json; give a Hugging Face model directory")
    return read_json(directory / "config.json", dict, CheckpointError, "give a Hugging Face model directory")


def load_hf(directory: str | os.PathLike, dtype: str | None = None) -> tuple[GPT, GPTConfig]:
    """A GPT-2, Llama or Qwen3 directory (config.json and model.safetensors, or its shards) as our GPT, in the
    weights' own dtype or in `dtype` ("float32", "float16", "bfloat16"). The model is made on PyTorch's meta
    device (no memory) and takes the converted tensors as its own, so the weights are in memory once."""
    directory = Path(directory)
    data = read_hf_config(directory)
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype} is not one of: {', '.join(DTYPES)}")
    config = config_from_hf(data)
    try:
        weights = LazyWeights(weight_files(directory), DTYPES.get(dtype))
        state = from_hf_state(config, weights)
    except (OSError, ValueError, SafetensorError) as exc:  # ValueError: a header that is not JSON
        raise CheckpointError(f"cannot read the weights in {directory} ({exc})") from None
    except KeyError as exc:
        raise CheckpointError(f"the weights in {directory} lack {exc} that its config.json needs") from None
    try:
        model = GPT.from_state(config, state)
    except ValueError as exc:
        raise CheckpointError(f"the weights in {directory} do not fit its config.json ({exc})") from None
    return model.eval(), config


def load_hf_model(directory: str | os.PathLike, dtype: str | None = None) -> tuple[GPT, Tokenizer, GPTConfig]:
    """`load_hf` and `load_hf_tokenizer`, the tokenizer checked against the model once: every id it can give
    must have a row in the embedding (a tokenizer of another model gave an IndexError mid-generation), and an
    empty one gives nothing to run the model on."""
    model, config = load_hf(directory, dtype)
    tokenizer = load_hf_tokenizer(directory)
    if tokenizer.vocab_size == 0:
        raise CheckpointError(f"{directory}/tokenizer.json holds no tokens; give the model's own tokenizer.json")
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{directory}/tokenizer.json has {tokenizer.vocab_size:,} tokens, more than the {config.vocab_size:,} "
            "rows of the model's embedding (config.json vocab_size); the tokenizer is not this model's"
        )
    return model, tokenizer, config


def hf_eos_ids(directory: str | os.PathLike) -> list[int]:
    """The end-of-text ids of a Hub directory: generation_config.json's, else config.json's (an id or a list)."""
    for name in ("generation_config.json", "config.json"):
        path = Path(directory) / name
        if path.exists():
            shape = {"eos_token_id?": (COUNT, [COUNT], None)}
            value = read_json(path, shape, CheckpointError, "give a Hugging Face model directory").get("eos_token_id")
            if value is not None:
                return [value] if isinstance(value, int) else value
    return []


def load_hf_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """The tokenizer of a Hugging Face directory. What lucidlm's own export wrote comes back as lucidlm's own
    tokenizer (its BPE, or the WordLevel forms of its char and word tokenizers); any other tokenizer.json is
    run by Hugging Face `tokenizers` itself (tokenizers/hf.py), with the directory's end-of-text ids."""
    path = Path(directory) / "tokenizer.json"
    data = read_tokenizer_file(path)
    model = data.get("model", {}) if isinstance(data, dict) else {}
    if model.get("type") == "WordLevel":
        vocab = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
        special = [token["content"] for token in sorted(data.get("added_tokens") or [], key=lambda t: t["id"])]
        pattern = (data.get("pre_tokenizer") or {}).get("pattern", {}).get("Regex")
        if pattern == r"[\s\S]":
            return CharTokenizer(vocab, special)
        if pattern == r"\w+|\s+|[^\w\s]":
            return WordTokenizer(vocab, special)
    if BPETokenizer.is_own_format(data):
        return load_tokenizer(path)
    return load_hf_directory_tokenizer(directory, hf_eos_ids(directory))
