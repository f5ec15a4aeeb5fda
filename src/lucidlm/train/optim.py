"""The optimizers the trainer can use: `adamw` (the default) and `muon`.

AdamW keeps two parameter groups: weight decay on matrices and embeddings, none on biases and norm gains.

Muon (Keller Jordan, 2024) updates each hidden matrix W by the orthogonalised momentum of its gradient: the
momentum matrix M = U S V^T is replaced by (nearly) U V^T, so every direction of the update gets the same step
size however small its singular value was. It is for the 2-D matrices inside the transformer blocks; the token
and position embeddings, the head tied to them, and the norm gains stay with AdamW. `MuonWithAdamW` holds both
kinds of group in one optimizer, so one `state_dict` carries all the moments into a checkpoint.

`torch.optim.Muon` runs the Newton-Schulz iteration in bf16, which is fast on GPUs and slow on CPUs without bf16
matrix units (about 10x slower per step here, docs/benchmarks.md); this one runs it in the parameters' dtype.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lucidlm.config import TrainConfig

# The quintic's coefficients from Keller Jordan's Muon: chosen for the largest slope at zero, so that five steps
# take even tiny singular values close to 1 (they end in roughly [0.7, 1.2], not exactly at 1, which does not hurt).
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrix: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for matrix = U S V^T, by iterating X <- a X + b (X X^T) X + c (X X^T)^2 X.

    Each step multiplies X by Q = a I + b G + c G^2, a polynomial in its Gram matrix G = X X^T. Q commutes with
    G, so the next Gram matrix is Q G Q, and X after k steps is Q_k ... Q_1 X: the whole iteration runs on the
    small (rows, rows) Gram matrix, and X's long side is touched twice, at the start and at the end. For a
    (128, 704) matrix that is about half the multiplications of updating X every step.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    transposed = matrix.size(0) > matrix.size(1)
    x = matrix.T if transposed else matrix  # (rows <= cols): the Gram matrix X X^T is the smaller one
    x = x / x.norm().clamp(min=eps)  # Frobenius norm >= spectral norm, so all singular values start <= 1
    gram = x @ x.T
    identity = torch.eye(gram.size(0), dtype=gram.dtype, device=gram.device)
    product = identity
    for step in range(steps):
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c).add_(identity, alpha=a)  # a I + b G + c G^2
        product = polynomial @ product
        if step < steps - 1:
            gram = polynomial @ gram @ polynomial
    x = product @ x
    return x.T if transposed else x


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the groups marked `use_muon`, AdamW for the others; one learning rate drives both.

    Muon's step is scaled by 0.2 * sqrt(max(rows, cols)) (Moonshot's "match RMS" rule, torch.optim.Muon's
    `adjust_lr_fn="match_rms_adamw"`), which gives its update the RMS of a typical AdamW update, so the same
    `lr` and schedule suit both kinds of parameter.
    """

    def __init__(
        self,
        groups: list[dict],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.99),
        momentum: float = 0.95,
        ns_steps: int = 5,
        eps: float = 1e-8,
    ):
        for group in groups:
            if group["use_muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon updates 2-D matrices only; give the other parameters to AdamW")
        defaults = dict(lr=lr, betas=betas, momentum=momentum, ns_steps=ns_steps, eps=eps, weight_decay=0.0)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon_update(param, group)
                else:
                    self._adamw_update(param, group)

    def _muon_update(self, param: torch.Tensor, group: dict) -> None:
        state = self.state[param]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(param)
        momentum, buffer = group["momentum"], state["momentum_buffer"]
        buffer.lerp_(param.grad, 1 - momentum)  # an exponential moving average of the gradients
        nesterov = param.grad.lerp(buffer, momentum)  # look ahead: the gradient mixed with the updated average
        update = newton_schulz(nesterov, group["ns_steps"])
        rows, cols = param.shape
        param.mul_(1 - group["lr"] * group["weight_decay"])
        param.add_(update, alpha=-group["lr"] * 0.2 * math.sqrt(max(rows, cols)))

    def _adamw_update(self, param: torch.Tensor, group: dict) -> None:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = state["step"].item()
        state["exp_avg"].lerp_(param.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
        denominator = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
        param.mul_(1 - group["lr"] * group["weight_decay"])
        param.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1**step))


def make_optimizer(model: nn.Module, config: TrainConfig, device_type: str) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "muon":
        hidden = {id(p) for p in model.transformer.h.parameters() if p.dim() == 2}
        groups = [
            {"params": [p for p in parameters if id(p) in hidden], "use_muon": True, "weight_decay": 0.0},
            {
                "params": [p for p in parameters if id(p) not in hidden and p.dim() >= 2],
                "use_muon": False,
                "weight_decay": config.weight_decay,
            },
            {"params": [p for p in parameters if p.dim() < 2], "use_muon": False, "weight_decay": 0.0},
        ]
        return MuonWithAdamW(
            groups,
            lr=config.lr,
            betas=(config.beta1, config.beta2),
            momentum=config.muon_momentum,
            ns_steps=config.newton_schulz_steps,
        )
    decay = [p for p in parameters if p.dim() >= 2]
    no_decay = [p for p in parameters if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel updates each tensor in one pass over its four arrays (weights, gradient, two moments)
    # instead of one pass per arithmetic operation: on 2 CPU cores the nanogpt-baby step takes 0.5 ms, not 3.
    fused = device_type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)
