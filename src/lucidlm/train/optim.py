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
from torch.optim.adamw import adamw

from lucidlm.run_config import TrainConfig

# The quintic's coefficients from Keller Jordan's Muon: chosen for the largest slope at zero, so that five steps
# take even tiny singular values close to 1 (they end in roughly [0.7, 1.2], not exactly at 1, which does not hurt).
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# Where torch's fused AdamW kernel runs: one pass per tensor over its four arrays (weights, gradient, two
# moments) instead of one pass per arithmetic operation, which on a small model is most of the step's time.
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def newton_schulz(matrix: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for matrix = U S V^T, by iterating X <- a X + b (X X^T) X + c (X X^T)^2 X.

    Each step multiplies X by Q = a I + b G + c G^2, a polynomial in its Gram matrix G = X X^T. Q commutes with
    G, so the next Gram matrix is Q G Q, and X after k steps is Q_k ... Q_1 X: the whole iteration runs on the
    small (rows, rows) Gram matrix, and X's long side is touched twice, at the start and at the end. For a
    (128, 704) matrix that is about half the multiplications of updating X every step.

    `matrix` may also be a stack (n, rows, cols) of matrices of one shape, orthogonalised together: each product
    is then one batched product for all n, which on a CPU costs little more than one of them.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    transposed = matrix.size(-2) > matrix.size(-1)
    x = matrix.mT if transposed else matrix  # (rows <= cols): the Gram matrix X X^T is the smaller one
    # Frobenius norm >= spectral norm, so all singular values start <= 1
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    gram = x @ x.mT
    product = None
    for step in range(steps):
        polynomial = (gram @ gram).mul_(c).add_(gram, alpha=b)
        polynomial.diagonal(dim1=-2, dim2=-1).add_(a)  # a I + b G + c G^2
        product = polynomial if product is None else polynomial @ product
        if step < steps - 1:
            gram = polynomial @ gram @ polynomial
    x = product @ x
    return x.mT if transposed else x


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the groups marked `use_muon`, AdamW for the others; one learning rate drives both.

    Muon's step is scaled by 0.2 * sqrt(max(rows, cols)) (Moonshot's "match RMS" rule, torch.optim.Muon's
    `adjust_lr_fn="match_rms_adamw"`), which gives its update the RMS of a typical AdamW update, so the same
    `lr` and schedule suit both kinds of parameter.

    Each group is updated as a whole, not tensor by tensor: with a few dozen small tensors the per-operation
    overhead, not the arithmetic, is most of an optimizer step (docs/benchmarks.md).
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
        # AdamW's fused kernel, on the devices that have one; its step counters then live on that device
        fused = all(p.device.type in FUSED_ADAMW_DEVICES for group in groups for p in group["params"])
        defaults = dict(
            lr=lr, betas=betas, momentum=momentum, ns_steps=ns_steps, eps=eps, weight_decay=0.0, fused=fused
        )
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params and group["use_muon"]:
                self._muon_step(params, group)
            elif params:
                self._adamw_step(params, group)

    def _muon_step(self, params: list[torch.Tensor], group: dict) -> None:
        for param in params:
            if not self.state[param]:
                self.state[param]["momentum_buffer"] = torch.zeros_like(param)
        grads = [p.grad for p in params]
        buffers = [self.state[p]["momentum_buffer"] for p in params]
        momentum, lr = group["momentum"], group["lr"]
        torch._foreach_lerp_(buffers, grads, 1 - momentum)  # an exponential moving average of the gradients
        lookahead = torch._foreach_lerp(grads, buffers, momentum)  # Nesterov: the gradient mixed with the new average
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        # Matrices of one shape are orthogonalised as one stack (in the shakespeare-char preset, four stacks of
        # four instead of sixteen matrices one by one).
        by_shape: dict[torch.Size, list[int]] = {}
        for index, param in enumerate(params):
            by_shape.setdefault(param.shape, []).append(index)
        for (rows, cols), indices in by_shape.items():
            updates = newton_schulz(torch.stack([lookahead[i] for i in indices]), group["ns_steps"])
            torch._foreach_add_(
                [params[i] for i in indices], list(updates.unbind()), alpha=-lr * 0.2 * math.sqrt(max(rows, cols))
            )

    def _adamw_step(self, params: list[torch.Tensor], group: dict) -> None:
        for param in params:
            if not self.state[param]:
                device = param.device if group["fused"] else None
                self.state[param]["step"] = torch.zeros((), dtype=torch.float32, device=device)
                self.state[param]["exp_avg"] = torch.zeros_like(param)
                self.state[param]["exp_avg_sq"] = torch.zeros_like(param)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        # torch.optim.AdamW's own update, called as a function: the same arithmetic, one kernel per tensor
        adamw(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            fused=group["fused"],
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )


def make_optimizer(model: nn.Module, config: TrainConfig, device_type: str) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "muon":
        # The blocks' matrices; LoRA's thin factors (rank r) are left to AdamW, as LoRA is usually trained
        hidden = {id(p) for n, p in model.transformer.h.named_parameters() if p.dim() == 2 and "lora_" not in n}
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
            [group for group in groups if group["params"]],
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
    fused = device_type in FUSED_ADAMW_DEVICES
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)
