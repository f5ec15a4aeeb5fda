"""AdamW with two parameter groups: weight decay on matrices and embeddings, none on biases and norm gains."""

from __future__ import annotations

import torch
from torch import nn

from lucidlm.config import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig, device_type: str) -> torch.optim.AdamW:
    parameters = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in parameters if p.dim() >= 2]
    no_decay = [p for p in parameters if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel is one launch per step on CUDA; on the CPU the multi-tensor (foreach) path is used.
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=device_type == "cuda")
