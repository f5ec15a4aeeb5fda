"""The GPT in NumPy: the same model as lucidlm.model.GPT, with its backward pass written by hand.

Parameters live in a dict whose names and shapes are those of the PyTorch model's state dict, so weights move
between the two backends unchanged (see bridge.py). Supported: learned or rotary positions, LayerNorm, GELU or
ReLU, bias on or off, a head tied to the token embedding, no dropout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lucidlm.errors import ConfigError
from lucidlm.memory import keep_freed_memory
from lucidlm.model.config import GPTConfig
from lucidlm.scratch.layers import (
    attention_backward,
    attention_forward,
    crossentropy_backward,
    crossentropy_forward,
    embedding_backward,
    embedding_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    rope_backward,
    rope_forward,
)
from lucidlm.scratch.sampling import sample_next

ACTIVATIONS = {"gelu": (gelu_forward, gelu_backward), "relu": (relu_forward, relu_backward)}


def check_supported(config: GPTConfig) -> None:
    """The NumPy backend covers the GPT-2 family; anything else is a clear error naming the switch."""
    problems = []
    if config.positions not in ("learned", "rope"):
        problems.append(f"positions={config.positions!r} (use learned or rope)")
    if config.norm != "layernorm":
        problems.append(f"norm={config.norm!r} (use layernorm)")
    if config.mlp not in ACTIVATIONS:
        problems.append(f"mlp={config.mlp!r} (use gelu or relu)")
    if not config.tie_embeddings:
        problems.append("tie_embeddings=false (use true)")
    if config.n_kv_head != config.n_head:
        problems.append(f"n_kv_head={config.n_kv_head} (use n_kv_head=n_head)")
    if config.dropout:
        problems.append(f"dropout={config.dropout} (use 0)")
    if config.head_dim * config.n_head != config.n_embd:
        problems.append(f"head_dim={config.head_dim} (use n_embd / n_head)")
    if config.rope_scaling is not None:
        problems.append("rope_scaling (use none)")
    if problems:
        raise ConfigError(
            f"the NumPy backend does not support {'; '.join(problems)}; change that setting (the nanogpt-baby "
            "preset suits the NumPy backend) or train with --backend torch"
        )


def rope_tables(length: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and signed sin of the rotation angle for every (position, pair of channels), as the PyTorch GPT's
    `rope_tables`: channel i pairs with channel i + D/2, and the sin table's first half carries the minus sign of
    the rotation's first row. Each (length, head_dim)."""
    frequency = theta ** (-np.arange(0, head_dim, 2) / head_dim)  # (D/2,)
    angle = np.outer(np.arange(length), frequency)  # (length, D/2)
    return np.cos(np.concatenate([angle, angle], axis=-1)), np.concatenate([-np.sin(angle), np.sin(angle)], axis=-1)


class NumpyGPT:
    def __init__(self, config: GPTConfig, dtype: type = np.float32, seed: int = 0):
        check_supported(config)
        keep_freed_memory()
        self.config, self.dtype = config, np.dtype(dtype)
        self.params = self.initial_parameters(np.random.default_rng(seed))
        if config.positions == "rope":
            cos, sin = rope_tables(config.block_size, config.head_dim, config.rope_theta)
            self.rope = (cos.astype(self.dtype), sin.astype(self.dtype))
        self.caches: dict | None = None
        self.hooks: dict[str, Callable[[np.ndarray], np.ndarray]] = {}  # hook point -> fn(value) -> value
        self.kept: dict[str, np.ndarray] | None = None  # the values run_with_cache keeps

    def initial_parameters(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """GPT-2's initialisation: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 L)), gains 1, biases 0."""
        c = self.config
        C, V = c.n_embd, c.vocab_size
        shapes = {"transformer.wte.weight": (V, C)}
        if c.positions == "learned":
            shapes["transformer.wpe.weight"] = (c.block_size, C)
        for i in range(c.n_layer):
            layer = f"transformer.h.{i}."
            shapes |= {
                layer + "ln_1.weight": (C,),
                layer + "attn.c_attn.weight": (3 * C, C),
                layer + "attn.c_proj.weight": (C, C),
                layer + "ln_2.weight": (C,),
                layer + "mlp.c_fc.weight": (c.mlp_hidden, C),
                layer + "mlp.c_proj.weight": (C, c.mlp_hidden),
            }
            if c.bias:
                shapes |= {
                    layer + "ln_1.bias": (C,),
                    layer + "attn.c_attn.bias": (3 * C,),
                    layer + "attn.c_proj.bias": (C,),
                    layer + "ln_2.bias": (C,),
                    layer + "mlp.c_fc.bias": (c.mlp_hidden,),
                    layer + "mlp.c_proj.bias": (C,),
                }
        shapes["transformer.ln_f.weight"] = (C,)
        if c.bias:
            shapes["transformer.ln_f.bias"] = (C,)
        params = {}
        for name, shape in shapes.items():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                value = np.ones(shape)
            elif name.endswith(".bias"):
                value = np.zeros(shape)
            else:
                std = 0.02 / math.sqrt(2 * c.n_layer) if name.endswith("c_proj.weight") else 0.02
                value = rng.normal(0.0, std, shape)
            params[name] = value.astype(self.dtype)
        return params

    def num_params(self) -> int:
        return sum(p.size for name, p in self.params.items() if name != "transformer.wpe.weight")

    # --- hook points: TransformerLens's names, as lucidlm.model.GPT's (inference only: a hook that changes a
    # value is not seen by the backward pass) --------------------------------------------------------------
    def hook(self, name: str, value: np.ndarray) -> np.ndarray:
        """The value at hook point `name`, or what the hook set for it returns; kept by run_with_cache."""
        if name in self.hooks:
            value = self.hooks[name](value)
        if self.kept is not None:
            self.kept[name] = value
        return value

    def run_with_cache(self, idx: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits, and the value at every hook point of the pass (residual streams, head outputs, patterns)."""
        self.kept = {}
        try:
            logits, _ = self.forward(idx)
            return logits, self.kept
        finally:
            self.kept, self.caches = None, None

    def run_with_hooks(self, idx: np.ndarray, hooks: dict[str, Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
        """Logits of a pass in which each hook point of `hooks` passes on what its function returns."""
        self.hooks = hooks
        try:
            return self.forward(idx)[0]
        finally:
            self.hooks, self.caches = {}, None

    # --- forward ------------------------------------------------------------------------------------------
    def block_forward(self, x: np.ndarray, layer: str, kv: KVCache | None = None) -> tuple[np.ndarray, dict]:
        """x (B, T, C) -> (B, T, C), and what the backward pass needs. With `kv`, x holds the positions after
        those cached: their keys and values join the cache, and the queries attend over all of them."""
        p, c = self.params, self.config
        B, T, C = x.shape
        H, D = c.n_head, c.head_dim
        start = kv.length if kv is not None else 0
        point = "blocks." + layer.split(".")[2] + "."  # transformer.h.3. -> blocks.3.
        x = self.hook(point + "hook_resid_pre", x)
        cache = {}
        h, cache["ln_1"] = layernorm_forward(x, p[layer + "ln_1.weight"], p.get(layer + "ln_1.bias"), c.norm_eps)
        qkv, cache["c_attn"] = linear_forward(h, p[layer + "attn.c_attn.weight"], p.get(layer + "attn.c_attn.bias"))
        q, k, v = (part.reshape(B, T, H, D).transpose(0, 2, 1, 3) for part in np.split(qkv, 3, axis=-1))
        if c.positions == "rope":
            cos, sin = self.rope[0][start : start + T], self.rope[1][start : start + T]
            q, cache["rope_q"] = rope_forward(q, cos, sin)
            k, cache["rope_k"] = rope_forward(k, cos, sin)
        if kv is not None:
            k, v = kv.append(layer, k, v)  # (B, H, start + T, D)
        y, cache["attention"] = attention_forward(q, k, v)  # (B, H, T, D)
        self.hook(point + "attn.hook_pattern", cache["attention"][3])  # (B, H, T, S): to read, not to change
        y = self.hook(point + "attn.hook_z", y.transpose(0, 2, 1, 3))  # (B, T, H, D): each head's output
        y = y.reshape(B, T, C)
        attended, cache["attn_proj"] = linear_forward(
            y, p[layer + "attn.c_proj.weight"], p.get(layer + "attn.c_proj.bias")
        )
        x = x + attended
        h, cache["ln_2"] = layernorm_forward(x, p[layer + "ln_2.weight"], p.get(layer + "ln_2.bias"), c.norm_eps)
        h, cache["c_fc"] = linear_forward(h, p[layer + "mlp.c_fc.weight"], p.get(layer + "mlp.c_fc.bias"))
        h, cache["activation"] = ACTIVATIONS[c.mlp][0](h)
        h, cache["mlp_proj"] = linear_forward(h, p[layer + "mlp.c_proj.weight"], p.get(layer + "mlp.c_proj.bias"))
        return self.hook(point + "hook_resid_post", x + h), cache

    def forward(
        self, idx: np.ndarray, targets: np.ndarray | None = None, kv: KVCache | None = None
    ) -> tuple[np.ndarray, float | None]:
        """Logits (B, T, V) for token ids (B, T), and the mean cross-entropy when targets are given.
        What the backward pass needs is kept in self.caches. With `kv` (decoding), idx holds the tokens that
        follow the cached ones, and the cache grows by them."""
        p, c = self.params, self.config
        B, T = idx.shape
        start = kv.length if kv is not None else 0
        if start + T > c.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than block_size={c.block_size}")
        caches: dict = {}
        x, caches["wte"] = embedding_forward(idx, p["transformer.wte.weight"])
        if c.positions == "learned":
            positions, caches["wpe"] = embedding_forward(
                np.broadcast_to(np.arange(start, start + T), (B, T)), p["transformer.wpe.weight"]
            )
            x = x + positions
        for i in range(c.n_layer):
            x, caches[i] = self.block_forward(x, f"transformer.h.{i}.", kv)
        x, caches["ln_f"] = layernorm_forward(
            x, p["transformer.ln_f.weight"], p.get("transformer.ln_f.bias"), c.norm_eps
        )
        logits, caches["lm_head"] = linear_forward(x, p["transformer.wte.weight"], None)  # the tied head
        loss = None
        if targets is not None:
            loss, caches["loss"] = crossentropy_forward(logits, targets)
        self.caches = caches if kv is None else None  # decoding keeps nothing for a backward pass
        if kv is not None:
            kv.length += T
        return logits, loss

    # --- backward -----------------------------------------------------------------------------------------
    def block_backward(self, dout: np.ndarray, cache: dict, layer: str, grads: dict) -> np.ndarray:
        c = self.config
        B, T, C = dout.shape
        H, D = c.n_head, c.head_dim

        def store(names: tuple[str, ...], values: tuple) -> None:
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    grads[layer + name] = value

        # x_out = x_mid + mlp(ln_2(x_mid)): the residual passes dout straight through, and into the MLP.
        dh, *dparams = linear_backward(dout, cache["mlp_proj"])
        store(("mlp.c_proj.weight", "mlp.c_proj.bias"), dparams)
        dh = ACTIVATIONS[c.mlp][1](dh, cache["activation"])
        dh, *dparams = linear_backward(dh, cache["c_fc"])
        store(("mlp.c_fc.weight", "mlp.c_fc.bias"), dparams)
        dh, *dparams = layernorm_backward(dh, cache["ln_2"])
        store(("ln_2.weight", "ln_2.bias"), dparams)
        dx_mid = dout + dh
        # x_mid = x + attention(ln_1(x))
        dy, *dparams = linear_backward(dx_mid, cache["attn_proj"])
        store(("attn.c_proj.weight", "attn.c_proj.bias"), dparams)
        dy = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)
        dq, dk, dv = attention_backward(dy, cache["attention"])
        if c.positions == "rope":
            dq, dk = rope_backward(dq, cache["rope_q"]), rope_backward(dk, cache["rope_k"])
        dqkv = np.empty((B, T, 3, H, D), dtype=dout.dtype)  # one copy of each head's gradient into place
        for index, d in enumerate((dq, dk, dv)):
            dqkv[:, :, index] = d.transpose(0, 2, 1, 3)
        dqkv = dqkv.reshape(B, T, 3 * C)
        dh, *dparams = linear_backward(dqkv, cache["c_attn"])
        store(("attn.c_attn.weight", "attn.c_attn.bias"), dparams)
        dh, *dparams = layernorm_backward(dh, cache["ln_1"])
        store(("ln_1.weight", "ln_1.bias"), dparams)
        return dx_mid + dh

    def backward(self, dlogits: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Gradients of the last forward's loss with respect to every parameter, by name. With `dlogits`
        (B, T, V), those of another loss, of which dlogits is the gradient with respect to the logits (DPO's,
        lesson 26)."""
        if self.caches is None or (dlogits is None and "loss" not in self.caches):
            raise RuntimeError("call forward(idx, targets) before backward(), or forward(idx) before backward(dlogits)")
        caches, c, grads = self.caches, self.config, {}
        if dlogits is None:
            dlogits = crossentropy_backward(1.0, caches["loss"])
        dx, dwte_head, _ = linear_backward(dlogits, caches["lm_head"])
        dx, grads["transformer.ln_f.weight"], dbias = layernorm_backward(dx, caches["ln_f"])
        if dbias is not None:
            grads["transformer.ln_f.bias"] = dbias
        for i in reversed(range(c.n_layer)):
            dx = self.block_backward(dx, caches[i], f"transformer.h.{i}.", grads)
        if c.positions == "learned":
            grads["transformer.wpe.weight"] = embedding_backward(dx, caches["wpe"])
        # The token embedding is used twice, at the input and as the output head: its gradients add up.
        grads["transformer.wte.weight"] = embedding_backward(dx, caches["wte"]) + dwte_head
        self.caches = None
        return {name: grads[name] for name in self.params}

    # --- sampling ---------------------------------------------------------------------------------------
    def generate(
        self,
        idx: list[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        rng: np.random.Generator | None = None,
        use_cache: bool = True,
    ) -> list[int]:
        """Append tokens one by one (sampling.sample_next; 0 temperature: greedy). With `use_cache`, the prompt
        runs once and each step runs only the newest token over a KVCache; without, each step recomputes the
        whole context. Past the window, the context keeps its last block_size tokens (and the cache refills)."""
        rng = rng or np.random.default_rng()
        tokens, kv = list(idx), None
        for _ in range(max_new_tokens):
            window = tokens[-self.config.block_size :]
            if not use_cache:
                logits, _ = self.forward(np.array([window]))
            elif kv is None or kv.length == self.config.block_size:
                kv = KVCache()
                logits, _ = self.forward(np.array([window]), kv=kv)
            else:
                logits, _ = self.forward(np.array([window[-1:]]), kv=kv)
            tokens.append(sample_next(logits[0, -1], rng, temperature, top_k, top_p))
        self.caches = None
        return tokens[len(idx) :]


class KVCache:
    """Each layer's keys and values so far, (B, H, length, D) each, for decoding one token at a time."""

    def __init__(self) -> None:
        self.keys: dict[str, np.ndarray] = {}
        self.values: dict[str, np.ndarray] = {}
        self.length = 0

    def append(self, layer: str, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the new positions' keys and values to the layer's; returns all of them."""
        if layer in self.keys:
            k, v = np.concatenate([self.keys[layer], k], axis=2), np.concatenate([self.values[layer], v], axis=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def numel(self) -> int:
        return sum(k.size + v.size for k, v in zip(self.keys.values(), self.values.values(), strict=True))
