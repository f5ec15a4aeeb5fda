"""LoRA: fine-tune a model through small low-rank adapters while its own weights stay frozen (Hu et al., 2021).

A target layer's weight W (out, in) is left as it is; the layer learns two thin matrices, A (r, in) and
B (out, r), and computes
    y = x W^T + b + (alpha / r) * (x A^T) B^T
B starts at zero, so training starts from the base model's outputs exactly, and A from small random numbers,
so that B's first gradients are not zero. The adapters hold r * (in + out) numbers where W holds in * out:
rank 8 on a 768-wide layer is 2% of it. Merged, W + (alpha / r) B A is an ordinary weight again, which is how
generation, serving and export use a LoRA run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from lucidlm.errors import ConfigError

# The layers of a block that can take adapters: attention's fused q/k/v and output projections, the MLP's two.
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class LoRALinear(nn.Module):
    """A frozen Linear (its very weight and bias Parameters, under their own names) plus the adapters A and B."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own initialisation, as in PEFT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, in) -> (B, T, out); the adapter path goes through the rank-r bottleneck, never through B A
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def merged_weight(self) -> torch.Tensor:
        """W + (alpha / r) B A: the ordinary weight that computes what this layer does."""
        return self.weight + self.scale * (self.lora_B @ self.lora_A).to(self.weight.dtype)


def parse_targets(targets: str) -> list[str]:
    """`lora_targets` as written in a config ("attn.c_attn,mlp.c_fc"), checked against LORA_TARGETS."""
    names = [name.strip() for name in targets.split(",") if name.strip()]
    unknown = [name for name in names if name not in LORA_TARGETS]
    if unknown or not names:
        raise ConfigError(f"lora_targets={targets!r}: choose among {','.join(LORA_TARGETS)}")
    return names


def add_lora(model: nn.Module, rank: int, alpha: float, targets: str, train_embeddings: bool = False) -> list[str]:
    """Freeze `model` and put adapters on the target layers of every block; with `train_embeddings` the token
    embedding and the output layer stay trainable too (they hold the rows of newly added tokens, which the
    frozen model could not learn otherwise). Returns the names of the trainable parameters."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block in model.transformer.h:
        for target in parse_targets(targets):
            owner_name, layer_name = target.split(".")
            owner = getattr(block, owner_name)
            setattr(owner, layer_name, LoRALinear(getattr(owner, layer_name), rank, alpha))
    if train_embeddings:
        model.transformer.wte.weight.requires_grad_(True)
        model.lm_head.weight.requires_grad_(True)
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """The base model within: every adapter's scale is 0 (DPO's reference, when the base is frozen)."""
    layers = [module for module in model.modules() if isinstance(module, LoRALinear)]
    scales = [layer.scale for layer in layers]
    for layer in layers:
        layer.scale = 0.0
    try:
        yield
    finally:
        for layer, scale in zip(layers, scales, strict=True):
            layer.scale = scale


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight, leaving plain nn.Linear layers (in place; returns `model`)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                out_features, in_features = child.weight.shape
                merged = nn.Linear(in_features, out_features, bias=child.bias is not None, device="meta")
                merged.weight = nn.Parameter(child.merged_weight(), requires_grad=False)
                if child.bias is not None:
                    merged.bias = child.bias
                setattr(module, name, merged)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model
