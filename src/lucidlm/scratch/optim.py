"""AdamW and gradient clipping in NumPy, step for step what torch.optim.AdamW and clip_grad_norm_ do."""

from __future__ import annotations

import math

import numpy as np


class AdamW:
    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        # Matrices and embeddings decay; biases and norm gains (vectors) do not.
        self.decay = {name: weight_decay if p.ndim >= 2 else 0.0 for name, p in params.items()}
        self.exp_avg = {name: np.zeros_like(p) for name, p in params.items()}  # first moment m
        self.exp_avg_sq = {name: np.zeros_like(p) for name, p in params.items()}  # second moment v
        self.step_count = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.step_count += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.step_count)
        for name, param in self.params.items():
            grad = grads[name]
            param *= 1 - self.lr * self.decay[name]  # decoupled weight decay, applied before the Adam update
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            m += (1 - beta1) * (grad - m)
            v *= beta2
            v += (1 - beta2) * grad * grad
            param -= (self.lr / bias_correction1) * m / (np.sqrt(v) / bias_correction2_sqrt + self.eps)


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients so that their joint L2 norm is at most max_norm; returns the norm before."""
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    scale = min(max_norm / (total + 1e-6), 1.0)
    for g in grads.values():
        g *= scale
    return total
