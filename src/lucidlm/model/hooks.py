"""Hook points: named places inside the GPT where a caller may read an activation or replace it.

The names are TransformerLens's, so that people and notebooks carry over (`blocks.3.attn.hook_pattern`). A hook
is a function `hook(activation, name)` that returns nothing (it looks) or a tensor of the same shape (which goes
on in the activation's place). With no hook set, a point costs one look at an empty tuple: the forward pass is
the one it would be without them.

Hooks belong to a call, not to the model: `GPT.run_with_hooks` sets them in a context variable for one forward
pass (as TransformerLens's `hooks()` context does), where the model's modules find them through the `HookScope`
they share. Each thread, and each asyncio task, has a context of its own, so any number of inspections of one
model at once, and generation beside them, each see their own hooks and get the answer they would get alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

Hook = Callable[[torch.Tensor, str], torch.Tensor | None]

# Every layer's points, in the order the forward pass reaches them. Shapes: B batch, T positions, C channels,
# H query heads, K key/value heads, D head size, S keys (past + T), F the MLP's hidden width.
BLOCK_POINTS = (
    "hook_resid_pre",  # (B, T, C) the residual stream entering the layer
    "ln1.hook_normalized",  # (B, T, C) its normalised copy, before the gain (and bias) that attention's input gets
    "attn.hook_q",  # (B, T, H, D) queries, straight from the projection
    "attn.hook_k",  # (B, T, K, D) keys of the new positions
    "attn.hook_v",  # (B, T, K, D) values of the new positions
    "attn.hook_rot_q",  # (B, T, H, D) queries as they meet the keys: after QK-norm and RoPE (models with either)
    "attn.hook_rot_k",  # (B, T, K, D) keys likewise
    "attn.hook_attn_scores",  # (B, H, T, S) Q K^T / sqrt(D), -inf where the mask hides a key
    "attn.hook_pattern",  # (B, H, T, S) the attention weights, softmax of the scores
    "attn.hook_z",  # (B, T, H, D) each head's output, the weighted sum of values
    "hook_attn_out",  # (B, T, C) attention's contribution to the residual stream
    "hook_resid_mid",  # (B, T, C) the stream after attention
    "ln2.hook_normalized",  # (B, T, C) the normalised copy for the MLP, before the gain
    "mlp.hook_pre",  # (B, T, F) the first projection; for SwiGLU, its gate side
    "mlp.hook_pre_linear",  # (B, T, F) SwiGLU's value side, which the gate multiplies (gated MLPs only)
    "mlp.hook_post",  # (B, T, F) after the activation
    "hook_mlp_out",  # (B, T, C) the MLP's contribution to the residual stream
    "hook_resid_post",  # (B, T, C) the stream leaving the layer
)
# Around the layers: "hook_embed" (the token embeddings), "hook_pos_embed" (the learned or sinusoidal position
# embeddings; none with RoPE) and "ln_final.hook_normalized" (the final norm's, before its gain), each (B, T, C).
# As in TransformerLens, a norm's point sits between the normalisation and the gain: there a hook sees (and may
# replace) the direction the norm gives every position, before the learned per-channel scale.
ROTATED_POINTS = ("attn.hook_rot_q", "attn.hook_rot_k")
GATED_POINTS = ("mlp.hook_pre_linear",)


class Hooks(dict[str, Hook]):
    """The hooks of one model by point name; empty while nobody is looking."""

    def run(self, name: str, activation: torch.Tensor) -> torch.Tensor:
        hook = self.get(name)
        if hook is None:
            return activation
        replaced = hook(activation, name)
        if replaced is None:
            return activation
        if replaced.shape != activation.shape:
            raise ValueError(f"the hook at {name} returned shape {tuple(replaced.shape)}: {tuple(activation.shape)}")
        return replaced


class HookScope:
    """What one model's modules share: the key under which its forward passes find their hooks."""

    @contextmanager
    def using(self, hooks: Hooks) -> Iterator[None]:
        """`hooks` for the forward passes of this model that run in the current context, until the block ends."""
        token = ACTIVE_HOOKS.set(((self, hooks), *ACTIVE_HOOKS.get()))
        try:
            yield
        finally:
            ACTIVE_HOOKS.reset(token)

    def current(self) -> Hooks | None:
        if torch.compiler.is_compiling():  # compiled code (training's blocks, the decoding step) runs unhooked
            return None
        for scope, hooks in ACTIVE_HOOKS.get():
            if scope is self:
                return hooks
        return None


# The hooks of the forward passes running in this context, one (scope, hooks) pair for each model inside a
# `run_with_hooks`: usually none, and then a hook point costs one look at an empty tuple.
ACTIVE_HOOKS: ContextVar[tuple[tuple[HookScope, Hooks], ...]] = ContextVar("lucidlm_active_hooks", default=())


class HookPoints:
    """What a module with hook points needs: its model's `scope`, and the prefix of its points' names."""

    scope: HookScope
    prefix: str

    def hook(self, point: str, activation: torch.Tensor) -> torch.Tensor:
        hooks = self.scope.current()
        return hooks.run(self.prefix + point, activation) if hooks else activation

    def hooked(self, point: str) -> bool:
        hooks = self.scope.current()
        return bool(hooks) and self.prefix + point in hooks

    def normalize(self, point: str, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """norm(x), LayerNorm or RMSNorm; when a hook is set at `point`, in two steps with the point between
        the normalisation and the gain. With none, the norm's own kernel runs."""
        if not self.hooked(point):
            return norm(x)
        if isinstance(norm, nn.LayerNorm):
            normalized = F.layer_norm(x, norm.normalized_shape, eps=norm.eps)
        else:
            eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
            normalized = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
        out = self.hook(point, normalized) * norm.weight
        return out if getattr(norm, "bias", None) is None else out + norm.bias
