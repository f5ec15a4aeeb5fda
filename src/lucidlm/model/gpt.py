"""The GPT: a decoder-only transformer with switchable parts (see GPTConfig).

Shapes in comments: B batch, T time (tokens), C channels (n_embd), H heads, K key/value heads, D head size.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from lucidlm.model.config import GPTConfig
from lucidlm.model.kv_cache import KVCache, SlotKVCache, StaticKVCache, causal_mask

Cache = KVCache | SlotKVCache | StaticKVCache
EXPLICIT_BF16_KEYS = 512  # bf16 attention on the CPU is written out up to this many keys (see fast_attention)
CAUSAL_BLOCK_QUERIES = 64  # written-out causal attention takes queries in blocks this long, from two blocks on


class RMSNormFunction(torch.autograd.Function):
    """y = x / rms(x) * weight over the last dimension, with its gradient written out.

    With n = x / rms(x) and g_n = dL/dy * weight, the input's gradient is (g_n - n * mean(g_n * n)) / rms(x):
    the part of g_n along n is removed, because scaling x does not change n.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        inverse_rms = torch.rsqrt(x.square().mean(-1, keepdim=True).add_(eps))  # (..., 1)
        normed = x * inverse_rms
        ctx.save_for_backward(normed, inverse_rms, weight)
        return normed * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        normed, inverse_rms, weight = ctx.saved_tensors
        grad_weight = (grad * normed).flatten(0, -2).sum(0)
        grad_normed = grad * weight
        along_normed = (grad_normed * normed).mean(-1, keepdim=True)  # (..., 1)
        grad_x = torch.addcmul(grad_normed, normed, along_normed, value=-1).mul_(inverse_rms)
        return grad_x, grad_weight, None


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm, with the hand-written backward above when training on the CPU.

    PyTorch has no RMSNorm backward kernel for the CPU: autograd differentiates nn.RMSNorm's composite forward,
    about a dozen passes over the activations, where RMSNormFunction.backward takes six (docs/benchmarks.md).
    Elsewhere, and without gradients, nn.RMSNorm's own kernels run.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_grad_enabled():
            # bf16 queries and keys under autocast meet an fp32 gain in QK-norm: PyTorch's kernel wants one dtype
            # (it warns and falls back otherwise), and the training path below gives fp32 too
            return super().forward(x if x.dtype == self.weight.dtype else x.to(self.weight.dtype))
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        return RMSNormFunction.apply(x, self.weight, eps)


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


def runs_in_bf16_on_cpu(x: torch.Tensor) -> bool:
    """Whether a product with x runs in bf16 on the CPU: x is bf16, or autocast will make it so (QK-norm's fp32
    gain hands fp32 queries and keys to attention even under bf16 autocast)."""
    if x.device.type != "cpu":
        return False
    autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return x.dtype == torch.bfloat16 or autocast_bf16


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
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
        layer: int = 0,
        mask: torch.Tensor | None = None,
        attention_out: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, C)
        q, k, v = self.queries_keys_values(x, rope)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, K, past + T, D)

        if attention_out is None:
            y = self.fast_attention(q, k, v, mask)
        else:
            y, weights = self.explicit_attention(q, k, v, mask)
            attention_out.append(weights)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def queries_keys_values(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, H, T, D), k and v (B, K, T, D) from x (B, T, C): the fused projection, then QK-norm and RoPE."""
        B, T, _ = x.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.c_attn(x).split([H * D, K * D, K * D], dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        v = v.view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def fast_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if runs_in_bf16_on_cpu(q) and k.shape[2] <= EXPLICIT_BF16_KEYS:
            # PyTorch's flash attention for the CPU is slower in bf16 than in fp32 (its backward most of all),
            # while the two matrix products written out run on the bf16 units: 52 -> 33 ms a layer for a
            # (16, 6, 256, 64) forward and backward. The (T, T) weights it holds are small at such lengths.
            if mask is None and q.shape[2] == k.shape[2] >= 2 * CAUSAL_BLOCK_QUERIES:
                return self.causal_attention_in_blocks(q, k, v, q.shape[2] // CAUSAL_BLOCK_QUERIES)
            return self.explicit_attention(q, k, v, mask)[0]
        # Without a mask, queries and keys either start together (plain causal attention) or there is one
        # query, which may see every key.
        plain_causal = mask is None and q.shape[2] > 1
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=plain_causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )

    def causal_attention_in_blocks(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_blocks: int
    ) -> torch.Tensor:
        """Plain causal attention with the queries cut into n_blocks, each against the keys up to its own end.

        A block's queries cannot see the later keys, so their scores would all be masked: leaving them out skips
        (n - 1) / 2n of the (T, T) products and softmax (a quarter in halves, 3/8 in quarters) and gives the same
        outputs (a masked key adds exp(-inf) = 0). Smaller blocks skip more but run smaller, slower products:
        blocks of 64 queries came within 3% of the best count from 128 to 512 tokens (docs/benchmarks.md).
        """
        bounds = [q.shape[2] * i // n_blocks for i in range(n_blocks + 1)]
        blocks = [
            self.explicit_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], None)[0]
            for start, end in pairwise(bounds)
        ]
        return torch.cat(blocks, dim=2)  # (B, H, T, D)

    def explicit_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(Q K^T / sqrt(D) + mask) V, written out so the weights can be looked at."""
        scores, v = self.masked_scores(q, k, mask), v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)  # the exponentials in fp32 always
        dropped = F.dropout(weights, self.dropout, self.training)
        return dropped @ v, weights  # (B, H, T, D), (B, H, T, past+T)

    def masked_scores(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Q K^T / sqrt(D), with -inf where the mask (causal, without one) hides a key. (B, H, T, past+T)"""
        k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)  # grouped-query heads share theirs
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if mask is None:
            T, keys = q.shape[2], k.shape[2]
            mask = causal_mask(keys - T, T, q.device)
        return scores.masked_fill(~mask, float("-inf"))


def gelu_tanh_by_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, 0.5 h (1 + tanh(u)) with u = sqrt(2 / pi) (h + 0.044715 h^3), written as h sigmoid(2u).

    The two are one function (0.5 (1 + tanh u) = sigmoid(2u)), but Inductor's CPU code computes tanh far slower
    than exp: for a (4096, 1536) bf16 activation, 6.9 ms forward and 14.5 ms with the backward against 2.8 and
    7.1 ms this way. Eager PyTorch would run this as several passes over memory, so only compiled code takes it.
    """
    x = h.to(torch.promote_types(h.dtype, torch.float32))  # bf16 in, fp32 inside, as F.gelu computes it
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
    return (x * torch.sigmoid(2 * u)).to(h.dtype)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.kind = config.mlp
        # SwiGLU needs two input projections (gate and value); they are fused into one matrix here.
        width = 2 * config.mlp_hidden if config.mlp == "swiglu" else config.mlp_hidden
        self.c_fc = nn.Linear(config.n_embd, width, bias=config.bias)
        self.c_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.activation(self.c_fc(x))))

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) from c_fc's (B, T, hidden), or from its (B, T, 2 * hidden) for SwiGLU."""
        if self.kind == "gelu":
            if torch.compiler.is_compiling():
                return gelu_tanh_by_sigmoid(h)
            return F.gelu(h, approximate="tanh")  # GPT-2's own formula (Hugging Face calls it gelu_new)
        if self.kind == "relu":
            return F.relu(h)
        if self.kind == "relu2":
            return F.relu(h).square()
        gate, value = h.chunk(2, dim=-1)
        return F.silu(gate) * value


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope=None, cache=None, layer=0, mask=None, attention_out=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache, layer, mask, attention_out)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                drop=make_dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
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
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: Cache | None = None,
        attention_out: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) for token ids `idx` (B, T); the mean cross-entropy too when `targets` is given.

        With `cache`, `idx` continues the cached sequence. With `attention_out`, the explicit attention path
        runs and appends each layer's weights (B, H, T, past + T) to that list.
        """
        T = idx.shape[1]
        length = T if cache is None else cache.end(T)  # None for a StaticKVCache, whose caller checks
        if length is not None and length > self.config.block_size:
            raise ValueError(f"sequence of {length} tokens is longer than block_size={self.config.block_size}")
        if cache is None:
            positions, mask = torch.arange(T, device=idx.device), None  # (T,)
        else:
            positions, mask = cache.positions(T), cache.attention_mask(T)  # (T,) or (B, T) per row
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.positions == "learned":
            x = x + self.transformer.wpe(positions)
        elif self.config.positions == "sinusoidal":
            x = x + self.sinusoid[positions]
        else:
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        x = self.transformer.drop(x)
        blocks = self.compiled_blocks if self.compiled_blocks and torch.is_grad_enabled() else self.transformer.h
        for layer, block in enumerate(blocks):
            x = block(x, rope, cache, layer, mask, attention_out)
        if cache is not None:
            cache.advance(T)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            # bf16 logits are scored in fp32; fp32 and fp64 as they are
            scored = logits.to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(scored.view(-1, scored.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

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
