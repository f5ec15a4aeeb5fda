"""The GPT: a decoder-only transformer with switchable parts (see GPTConfig).

This file says what the model computes. How the machine computes attention, RMSNorm and GELU fast is in
kernels.py; the named points where a caller may look inside (`run_with_cache`, `run_with_hooks`) in hooks.py.

Shapes in comments: B batch, T time (tokens), C channels (n_embd), H heads, K key/value heads, D head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lucidlm.model.config import GPTConfig
from lucidlm.model.hooks import BLOCK_POINTS, GATED_POINTS, ROTATED_POINTS, Hook, HookPoints, Hooks, HookScope
from lucidlm.model.kernels import RMSNorm, attention, gelu_tanh, written_out_attention
from lucidlm.model.kv_cache import KVCache, SlotKVCache, StaticKVCache

Cache = KVCache | SlotKVCache | StaticKVCache


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def make_dropout(p: float) -> nn.Module:
    """Dropout, or nothing at all when p is 0: a no-op module still costs a call per token when decoding."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The 2017 Transformer's fixed positions: sin and cos at geometrically spaced frequencies. (length, dim)"""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


def rope_tables(
    length: int, head_dim: int, theta: float, scaling: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of the rotation angle for every (position, pair of channels). Each (length, head_dim).

    Channel i and i + D/2 form a pair, as in Llama. The sin table's first half is negated: the minus sign in
    the rotation's first row (see apply_rope)."""
    frequency = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
    if scaling is not None:
        frequency = llama3_frequencies(frequency, scaling)
    angle = torch.outer(torch.arange(length, dtype=torch.float32), frequency)  # (length, D/2)
    return torch.cat([angle, angle], dim=-1).cos(), torch.cat([-angle.sin(), angle.sin()], dim=-1)


def llama3_frequencies(frequency: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3's RoPE for long contexts: pairs that turn slowly (a wavelength beyond the original context /
    low_freq_factor) turn `factor` times slower still, fast ones (below context / high_freq_factor) are left
    alone, and those between are blended smoothly from one to the other."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / frequency
    smooth = ((context / wavelength - low) / (high - low)).clamp(0, 1)  # 0: slow pairs, 1: fast ones
    return (1 - smooth) * frequency / factor + smooth * frequency


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+D/2}) by its position's angle a:
    x_i -> x_i cos a - x_{i+D/2} sin a, and x_{i+D/2} -> x_{i+D/2} cos a + x_i sin a.

    Rolling the channels by D/2 puts each pair's partner in its place, and `sin` carries the minus sign
    (rope_tables), so the rotation is two products and a sum. x: (B, H, T, D); cos, sin: (T, D), or (B, T, D)
    when each row sits at its own positions."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D): the same angles for every head
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


class CausalSelfAttention(HookPoints, nn.Module):
    def __init__(self, config: GPTConfig, scope: HookScope, layer: int):
        super().__init__()
        self.scope, self.prefix, self.layer = scope, f"blocks.{layer}.", layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        # Queries, keys and values come from one fused matrix: one matmul instead of three.
        self.c_attn = nn.Linear(
            config.n_embd, (config.n_head + 2 * config.n_kv_head) * config.head_dim, bias=config.bias
        )
        self.c_proj = nn.Linear(config.n_head * config.head_dim, config.n_embd, bias=config.bias)
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            # Unit-RMS queries and keys bound every attention logit by sqrt(D) times the gains, so a high
            # learning rate cannot blow the softmax up into one-hot weights.
            self.q_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
        self.dropout = config.dropout
        self.resid_dropout = make_dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, C)
        q, k, v = self.queries_keys_values(x, rope)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, K, past + T, D)
        dropout_p = self.dropout if self.training else 0.0
        if self.hooked("attn.hook_attn_scores") or self.hooked("attn.hook_pattern"):
            y = written_out_attention(q, k, v, mask, dropout_p, observe=self.hook)  # the weights, for the hooks
        else:
            y = attention(q, k, v, mask, dropout_p)  # kernels.py picks the fastest way to the same numbers
        y = self.hook("attn.hook_z", y.transpose(1, 2))  # (B, T, H, D)
        y = y.contiguous().view(B, T, self.n_head * self.head_dim)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def queries_keys_values(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, T, D), k and v (B, K, T, D) from x (B, T, C): the fused projection, then QK-norm and RoPE."""
        B, T, _ = x.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.c_attn(x).split([H * D, K * D, K * D], dim=2)
        q = self.hook("attn.hook_q", q.view(B, T, H, D)).transpose(1, 2)  # (B, H, T, D)
        k = self.hook("attn.hook_k", k.view(B, T, K, D)).transpose(1, 2)  # (B, K, T, D)
        v = self.hook("attn.hook_v", v.view(B, T, K, D)).transpose(1, 2)  # (B, K, T, D)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.scope.current() and (self.qk_norm or rope is not None):
            q = self.hook("attn.hook_rot_q", q.transpose(1, 2)).transpose(1, 2)
            k = self.hook("attn.hook_rot_k", k.transpose(1, 2)).transpose(1, 2)
        return q, k, v


class MLP(HookPoints, nn.Module):
    def __init__(self, config: GPTConfig, scope: HookScope, layer: int):
        super().__init__()
        self.scope, self.prefix = scope, f"blocks.{layer}."
        self.kind = config.mlp
        # SwiGLU needs two input projections (gate and value); they are fused into one matrix here.
        width = 2 * config.mlp_hidden if config.mlp == "swiglu" else config.mlp_hidden
        self.c_fc = nn.Linear(config.n_embd, width, bias=config.bias)
        self.c_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.kind == "swiglu":
            gate, value = h.chunk(2, dim=-1)  # (B, T, hidden) each
            activated = F.silu(self.hook("mlp.hook_pre", gate)) * self.hook("mlp.hook_pre_linear", value)
        else:
            activated = self.activation(self.hook("mlp.hook_pre", h))
        return self.dropout(self.c_proj(self.hook("mlp.hook_post", activated)))

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "gelu":
            return gelu_tanh(h)  # GPT-2's own formula
        if self.kind == "relu":
            return F.relu(h)
        return F.relu(h).square()  # relu2


class Block(HookPoints, nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, scope: HookScope, layer: int):
        super().__init__()
        self.scope, self.prefix = scope, f"blocks.{layer}."
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, scope, layer)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config, scope, layer)

    def forward(self, x: torch.Tensor, rope=None, cache=None, mask=None) -> torch.Tensor:
        x = self.hook("hook_resid_pre", x)  # (B, T, C)
        attended = self.attn(self.normalize("ln1.hook_normalized", self.ln_1, x), rope, cache, mask)
        x = self.hook("hook_resid_mid", x + self.hook("hook_attn_out", attended))
        out = self.mlp(self.normalize("ln2.hook_normalized", self.ln_2, x))
        return self.hook("hook_resid_post", x + self.hook("hook_mlp_out", out))


class GPT(HookPoints, nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.scope, self.prefix = HookScope(), ""  # shared by every module: see run_with_hooks
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                drop=make_dropout(config.dropout),
                h=nn.ModuleList(Block(config, self.scope, layer) for layer in range(config.n_layer)),
                ln_f=make_norm(config),
            )
        )
        if config.positions == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.make_position_tables()
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.compiled_blocks: list[nn.Module] | None = None  # compile_blocks(): the same blocks, compiled
        self.apply(self._init_weights)
        # GPT-2: scale the projections into the residual stream by 1/sqrt(2 * n_layer), one per residual add,
        # so the stream's variance does not grow with depth.
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def make_position_tables(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> None:
        """The fixed tables of sinusoidal or rotary positions (buffers, not saved: they follow from the config)."""
        config = self.config
        if config.positions == "sinusoidal":
            table = sinusoidal_table(config.block_size, config.n_embd)
            self.register_buffer("sinusoid", table.to(dtype=dtype, device=device), persistent=False)
        elif config.positions == "rope":
            cos, sin = rope_tables(config.block_size, config.head_dim, config.rope_theta, config.rope_scaling)
            self.register_buffer("rope_cos", cos.to(dtype=dtype, device=device), persistent=False)
            self.register_buffer("rope_sin", sin.to(dtype=dtype, device=device), persistent=False)

    @classmethod
    def from_state(cls, config: GPTConfig, state: dict[str, torch.Tensor]) -> GPT:
        """A model whose parameters are `state`'s tensors themselves (named as `state_for_saving` names them),
        not copies of them: it is made on the meta device, which holds no memory, and then takes them. Raises
        ValueError naming any tensor that is missing or of the wrong shape."""
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_for_saving()
        check_shapes({n: t.shape for n, t in expected.items()}, {n: t.shape for n, t in state.items()})
        model.load_state_dict(state, strict=False, assign=True)
        if config.tie_embeddings:
            model.lm_head.weight = model.transformer.wte.weight
        weight = model.transformer.wte.weight
        model.make_position_tables(weight.dtype, weight.device)
        return model

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def compile_blocks(self) -> None:
        """Compile the blocks for training steps. The blocks run the same code on weights of the same shapes, so
        torch.compile makes one graph that all of them call, and compiles a deep model as fast as a shallow one.
        Inside it, Inductor fuses the element-wise work (norms, RoPE, SwiGLU, the bf16 casts) and its backward
        into a few loops. Forward passes without gradients (evaluation, decoding) keep the eager blocks: their
        shapes differ, and compiling again would cost more than they take."""
        self.compiled_blocks = [torch.compile(block) for block in self.transformer.h]

    def num_params(self, include_position_embeddings: bool = False) -> int:
        """Parameters, each tied tensor counted once; position embeddings left out unless asked for."""
        total = sum(p.numel() for p in self.parameters())
        if not include_position_embeddings and "wpe" in self.transformer:
            total -= self.transformer.wpe.weight.numel()
        return total

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: Cache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) for token ids `idx` (B, T); the mean cross-entropy too when `targets` is given.
        With `cache`, `idx` continues the cached sequence."""
        T = idx.shape[1]
        length = T if cache is None else cache.end(T)  # None for a StaticKVCache, whose caller checks
        if length is not None and length > self.config.block_size:
            raise ValueError(f"sequence of {length} tokens is longer than block_size={self.config.block_size}")
        if cache is None:
            positions, mask = torch.arange(T, device=idx.device), None  # (T,)
        else:
            positions, mask = cache.positions(T), cache.attention_mask(T)  # (T,) or (B, T) per row
        x = self.hook("hook_embed", self.transformer.wte(idx))  # (B, T, C)
        rope = None
        if self.config.positions == "learned":
            x = x + self.hook("hook_pos_embed", self.transformer.wpe(positions).expand_as(x))
        elif self.config.positions == "sinusoidal":
            x = x + self.hook("hook_pos_embed", self.sinusoid[positions].expand_as(x))
        else:
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        x = self.transformer.drop(x)
        compiled = self.compiled_blocks and torch.is_grad_enabled() and not self.scope.current()  # hooks run eager
        blocks = self.compiled_blocks if compiled else self.transformer.h
        for block in blocks:
            x = block(x, rope, cache, mask)
        if cache is not None:
            cache.advance(T)
        logits = self.lm_head(self.normalize("ln_final.hook_normalized", self.transformer.ln_f, x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            # bf16 logits are scored in fp32; fp32 and fp64 as they are
            scored = logits.to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(scored.view(-1, scored.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def hook_names(self) -> list[str]:
        """Every hook point of this model, in the order the forward pass reaches them (see model/hooks.py)."""
        c = self.config
        rotated = c.qk_norm or c.positions == "rope"
        points = [p for p in BLOCK_POINTS if rotated or p not in ROTATED_POINTS]
        points = [p for p in points if c.mlp == "swiglu" or p not in GATED_POINTS]
        embeddings = ["hook_embed"] if c.positions == "rope" else ["hook_embed", "hook_pos_embed"]
        layers = [f"blocks.{layer}.{point}" for layer in range(c.n_layer) for point in points]
        return [*embeddings, *layers, "ln_final.hook_normalized"]

    def run_with_hooks(self, idx: torch.Tensor, hooks: dict[str, Hook]) -> torch.Tensor:
        """Logits (B, T, vocab) for `idx`, with each hook called at its point, as `hook(activation, name)`: it
        may look, or return a tensor of the same shape to go on in the activation's place."""
        unknown = sorted(set(hooks) - set(self.hook_names()))
        if unknown:
            raise ValueError(f"this model has no hook point {unknown[0]} (GPT.hook_names() lists them)")
        with self.scope.using(Hooks(hooks)):
            return self(idx)[0]

    def run_with_cache(
        self, idx: torch.Tensor, names: list[str] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, T, vocab) for `idx`, and the activations at the hook points `names` (all of them without)."""
        cache: dict[str, torch.Tensor] = {}

        def keep(activation: torch.Tensor, name: str) -> None:
            cache[name] = activation

        logits = self.run_with_hooks(idx, dict.fromkeys(self.hook_names() if names is None else names, keep))
        return logits, cache

    def new_cache(
        self, batch_size: int, max_len: int | None = None, slots: bool = False, static: bool = False
    ) -> Cache:
        """A cache for `batch_size` rows; with `slots`, rows of independent lengths (see SlotKVCache); with
        `static`, the same shapes at every step, for a compiled decoding step (see StaticKVCache)."""
        c = self.config
        parameter = self.lm_head.weight
        kind = SlotKVCache if slots else StaticKVCache if static else KVCache
        return kind(
            c.n_layer,
            batch_size,
            c.n_kv_head,
            max_len or c.block_size,
            c.head_dim,
            dtype=parameter.dtype,
            device=parameter.device,
        )

    def state_for_saving(self) -> dict[str, torch.Tensor]:
        """The state dict with a tied head left out (it is the token embedding), as safetensors requires."""
        state = self.state_dict()
        if self.config.tie_embeddings:
            del state["lm_head.weight"]
        return state

    def load_saved_state(self, state: dict[str, torch.Tensor], partial: bool = False) -> None:
        """Load a state written by `state_for_saving`; raises ValueError naming any mismatch. With `partial`,
        `state` may hold some of the tensors (a LoRA run's base without its adapters, or its adapters alone)."""
        expected = self.state_for_saving()
        if partial:
            expected = {name: tensor for name, tensor in expected.items() if name in state}
            unknown = sorted(set(state) - set(expected))
            if unknown:
                raise ValueError(f"unexpected tensors {', '.join(unknown[:5])}")
        check_shapes({n: t.shape for n, t in expected.items()}, {n: t.shape for n, t in state.items()})
        with torch.no_grad():
            for name, tensor in expected.items():
                tensor.copy_(state[name])


def check_shapes(expected: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]]) -> None:
    """Raise ValueError naming the tensors that are missing, unexpected or of the wrong shape."""
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    wrong = sorted(n for n in set(expected) & set(given) if tuple(expected[n]) != tuple(given[n]))
    parts = [
        f"{label}: {', '.join(names[:4])}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if names
    ]
    if parts:
        raise ValueError("; ".join(parts))
