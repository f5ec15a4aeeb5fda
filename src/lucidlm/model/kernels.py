"""The machine's side of the GPT: which kernel computes attention, RMSNorm and GELU, and why.

`gpt.py` says what the model computes; this file says how it is computed fast, behind three calls:
`attention(q, k, v, mask, dropout_p)`, `RMSNorm` and `gelu_tanh(h)`. Each gives the same numbers as the textbook
formula (tests/model/test_gpt.py holds them equal); the timings behind each choice are in docs/benchmarks.md and
rerun with benchmarks/attention_blocks.py and benchmarks/train_speed.py.

Shapes: B batch, H query heads, K key/value heads, T queries, S keys (past + T), D head size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from lucidlm.model.kv_cache import causal_mask

EXPLICIT_BF16_KEYS = 512  # bf16 attention on the CPU is written out up to this many keys (see attention)
CAUSAL_BLOCK_QUERIES = 64  # written-out causal attention takes queries in blocks this long, from two blocks on

Observe = Callable[[str, torch.Tensor], torch.Tensor]  # a hook point: (name, tensor) -> the tensor to go on with


def runs_in_bf16_on_cpu(x: torch.Tensor) -> bool:
    """Whether a product with x runs in bf16 on the CPU: x is bf16, or autocast will make it so (QK-norm's fp32
    gain hands fp32 queries and keys to attention even under bf16 autocast)."""
    if x.device.type != "cpu":
        return False
    autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return x.dtype == torch.bfloat16 or autocast_bf16


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float = 0.0
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(D) + mask) V by the fastest kernel for these tensors. (B, H, T, D)

    q (B, H, T, D), k and v (B, K, S, D). Without a mask, queries and keys either start together (plain causal
    attention) or there is one query, which may see every key."""
    if runs_in_bf16_on_cpu(q) and k.shape[2] <= EXPLICIT_BF16_KEYS:
        # PyTorch's flash attention for the CPU is slower in bf16 than in fp32 (its backward most of all), while
        # the two matrix products written out run on the bf16 units. The (T, S) weights are small at such lengths.
        if mask is None and q.shape[2] == k.shape[2] >= 2 * CAUSAL_BLOCK_QUERIES:
            return causal_attention_in_blocks(q, k, v, q.shape[2] // CAUSAL_BLOCK_QUERIES, dropout_p)
        return written_out_attention(q, k, v, mask, dropout_p)
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        is_causal=mask is None and q.shape[2] > 1,
        dropout_p=dropout_p,
        enable_gqa=k.shape[1] != q.shape[1],
    )


def written_out_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    dropout_p: float = 0.0,
    observe: Observe | None = None,
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(D) + mask) V as two matrix products and a softmax. (B, H, T, D)

    `observe`, when given, sees (and may replace) the masked scores ("attn.hook_attn_scores") and the weights
    ("attn.hook_pattern"), each (B, H, T, S): the GPT's hooks look inside attention through it."""
    repeats = q.shape[1] // k.shape[1]  # grouped-query heads share their keys and values
    k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)  # (B, H, S, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is None:
        mask = causal_mask(k.shape[2] - q.shape[2], q.shape[2], q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    if observe is not None:
        scores = observe("attn.hook_attn_scores", scores)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)  # the exponentials in fp32 always
    if observe is not None:
        weights = observe("attn.hook_pattern", weights)
    return F.dropout(weights, dropout_p, dropout_p > 0) @ v


def causal_attention_in_blocks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_blocks: int, dropout_p: float = 0.0
) -> torch.Tensor:
    """Plain causal attention with the queries cut into n_blocks, each against the keys up to its own end.

    A block's queries cannot see the later keys, so their scores would all be masked: leaving them out skips
    (n - 1) / 2n of the (T, T) products and softmax (a quarter in halves, 3/8 in quarters) and gives the same
    outputs (a masked key adds exp(-inf) = 0). Smaller blocks skip more but run smaller, slower products:
    blocks of 64 queries came within 3% of the best count from 128 to 512 tokens (docs/benchmarks.md).
    """
    bounds = [q.shape[2] * i // n_blocks for i in range(n_blocks + 1)]
    blocks = [
        written_out_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], None, dropout_p)
        for start, end in pairwise(bounds)
    ]
    return torch.cat(blocks, dim=2)  # (B, H, T, D)


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


def gelu_tanh(h: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU (Hugging Face calls it gelu_new): 0.5 h (1 + tanh(sqrt(2 / pi) (h + 0.044715 h^3)))."""
    if torch.compiler.is_compiling():
        return gelu_tanh_by_sigmoid(h)
    return F.gelu(h, approximate="tanh")


def gelu_tanh_by_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, 0.5 h (1 + tanh(u)) with u = sqrt(2 / pi) (h + 0.044715 h^3), written as h sigmoid(2u).

    The two are one function (0.5 (1 + tanh u) = sigmoid(2u)), but Inductor's CPU code computes tanh far slower
    than exp (docs/benchmarks.md). Eager PyTorch would run this as several passes over memory, so only compiled
    code takes it.
    """
    x = h.to(torch.promote_types(h.dtype, torch.float32))  # bf16 in, fp32 inside, as F.gelu computes it
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)
    return (x * torch.sigmoid(2 * u)).to(h.dtype)
