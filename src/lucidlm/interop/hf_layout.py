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

import torch

from lucidlm.errors import ConfigError
from lucidlm.model import GPTConfig
from lucidlm.model.config import LLAMA3_ROPE_KEYS

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
