"""Decoding's matrix products through oneDNN, which reads an (out, in) weight twice as fast at batch 1.

At batch 1 a decoding step multiplies one vector by every weight matrix once, so its speed is the speed at
which the weights stream from memory. An `nn.Linear` weight is stored as (out, in) rows, and the product
PyTorch calls for it on the CPU (MKL's matrix-vector kernel, on one thread) streams that layout more slowly
than oneDNN's inner product, which ships inside PyTorch and which `torch.compile`'s CPU backend uses, reads
the same memory, unchanged (benchmarks/hub_gpt2.py and docs/benchmarks.md give the rates).

oneDNN's call has a larger fixed cost than MKL's, which a matrix in the cache does not win back: only weights
of at least ONEDNN_AT numbers (2 MB in float32; from a width of about 420 up) go through it, so baby models
keep `nn.Linear` throughout.

oneDNN has no backward pass for this product, so only the commands that decode (generate, serve) switch their
model over, after loading it; training, evaluation and export keep `nn.Linear`. The weights are shared, not
copied: the switched model holds the same parameters under the same names.
"""

from __future__ import annotations

import torch
from torch import nn

from lucidlm.model.gpt import GPT

ONEDNN_AT = 2**19


class OneDNNLinear(nn.Module):
    """`nn.Linear`'s product, y = x W^T + b, by oneDNN, over the same weight and bias."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def can_use_onednn(model: GPT) -> bool:
    """oneDNN multiplies float32 and bfloat16 on the CPU (float16 needs instructions few CPUs have)."""
    weight = model.lm_head.weight
    return (
        weight.device.type == "cpu"
        and weight.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
    )


def decode_with_onednn(model: GPT) -> None:
    """Switch `model`'s large matrix products, the output layer's included, to oneDNN, in place."""
    if not can_use_onednn(model):
        return
    owners = [model, *(layer for block in model.transformer.h for layer in (block.attn, block.mlp))]
    for owner in owners:
        for name, child in list(owner.named_children()):
            if isinstance(child, nn.Linear) and child.weight.numel() >= ONEDNN_AT:
                setattr(owner, name, OneDNNLinear(child))
