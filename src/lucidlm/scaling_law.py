"""Scaling laws you can run: how the loss falls with the model's size and the tokens it trains on.

Hoffmann et al. (2022, "Chinchilla") model the loss of a model of N parameters trained on D tokens as

    L(N, D) = E + A / N^alpha + B / D^beta

E is the text's own entropy, the loss no model removes; the second term is what a finite model cannot
represent, the third what a finite amount of training has not yet taught it. A training step costs about 6 N
FLOPs a token (2 forward, 4 backward), so a compute budget C buys the pairs with 6 N D = C: a larger model
sees fewer tokens. `ScalingLaw.fit` finds the five numbers from a grid of short runs (their approach 3: a
Huber loss on the log of the loss, minimised with L-BFGS from several starts), and `choose_depth` uses them
to decide which model a machine should train for a given number of seconds, or how many seconds it needs to
reach a given loss (train/recipe.py).

Repeated data: a small corpus read several times teaches less than fresh text. Muennighoff et al. (2023) fit
the worth of D tokens drawn from U unique ones as U + U R* (1 - exp(-(D/U - 1) / R*)) with R* = 15.4: a few
epochs are almost as good as new text, and the worth of more tends to U (1 + R*). The law is fitted to, and
predicts from, these effective tokens (`effective_tokens`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace

from lucidlm.model.config import GPTConfig

REPEAT_DECAY = 15.4  # R*: how many repetitions of a corpus it takes for their worth to fall by 1/e
WIDTH_PER_LAYER = 32  # the depth dial's family: n_embd = 32 x depth, heads of 64 (one for depths 2 and 3)


def effective_tokens(tokens: float, unique: float) -> float:
    """What `tokens` drawn from a corpus of `unique` tokens are worth as fresh text (Muennighoff et al., 2023)."""
    if tokens <= unique:
        return tokens
    return unique + unique * REPEAT_DECAY * (1 - math.exp(-(tokens / unique - 1) / REPEAT_DECAY))


def tokens_worth(effective: float, unique: float) -> float:
    """The tokens to draw from a corpus of `unique` tokens for them to be worth `effective` fresh ones: the
    inverse of `effective_tokens`, infinite past what endless repeats are worth, U (1 + R*)."""
    if effective <= unique:
        return effective
    if effective >= unique * (1 + REPEAT_DECAY):
        return math.inf
    return unique * (1 - REPEAT_DECAY * math.log(1 - (effective - unique) / (unique * REPEAT_DECAY)))


@dataclass(frozen=True)
class ScalingLaw:
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def loss(self, parameters: float, tokens: float) -> float:
        """The predicted loss of a model of `parameters` trained on `tokens` tokens."""
        return self.E + self.A / parameters**self.alpha + self.B / tokens**self.beta

    def tokens_for(self, loss: float, parameters: float) -> float:
        """The tokens a model of `parameters` must train on for the law to predict `loss`; infinite where the
        model is too small to get there however long it trains (E + A / N^alpha is its floor)."""
        left = loss - self.E - self.A / parameters**self.alpha
        return (self.B / left) ** (1 / self.beta) if left > 0 else math.inf

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def fit(cls, points: list[tuple[float, float, float]], delta: float = 1e-3) -> ScalingLaw:
        """The law through `points` (parameters, tokens, loss): Huber loss on log L, L-BFGS from a grid of
        starting points, the best end kept (Hoffmann et al., 2022, approach 3)."""
        import torch  # here: the law's other uses (lesson 21, in the page's Python too) need no PyTorch

        if len(points) < 5:
            raise ValueError(f"a law of five numbers needs at least 5 runs, not {len(points)}")
        data = torch.tensor(points, dtype=torch.float64)
        log_n, log_d, log_loss = data[:, 0].log(), data[:, 1].log(), data[:, 2].log()

        def objective(theta: torch.Tensor) -> torch.Tensor:
            e, a, alpha, b, beta = theta
            terms = torch.stack([e.expand_as(log_n), a - alpha * log_n, b - beta * log_d])
            residual = torch.logsumexp(terms, dim=0) - log_loss  # log of the predicted loss, less the measured
            return torch.nn.functional.huber_loss(residual, torch.zeros_like(residual), delta=delta, reduction="sum")

        best, best_value = None, math.inf
        starts = itertools.product([-1.0, 0.0, 0.5], [0.0, 5.0, 10.0], [0.2, 0.5], [0.0, 5.0, 10.0], [0.2, 0.5])
        for start in starts:
            theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
            optimizer = torch.optim.LBFGS([theta], max_iter=200, line_search_fn="strong_wolfe")

            def closure(theta: torch.Tensor = theta, optimizer: torch.optim.LBFGS = optimizer) -> torch.Tensor:
                optimizer.zero_grad()
                value = objective(theta)
                value.backward()
                return value

            optimizer.step(closure)
            with torch.no_grad():
                value = float(objective(theta))
            if math.isfinite(value) and value < best_value:
                best, best_value = theta.detach(), value
        e, a, alpha, b, beta = best.tolist()
        return cls(math.exp(e), math.exp(a), alpha, math.exp(b), beta)


def depth_shape(depth: int) -> dict[str, int]:
    """The model settings of one depth on the dial: n_layer = depth, n_embd = 32 x depth, heads of 64 where the
    width allows (depth 4 is the shakespeare-char preset's 4 x 128 with two heads)."""
    if depth < 1:
        raise ValueError(f"depth {depth} must be at least 1")
    width = WIDTH_PER_LAYER * depth
    return {"n_layer": depth, "n_embd": width, "n_head": max(1, width // 64)}


def with_depth(config: GPTConfig, depth: int) -> GPTConfig:
    """`config` at another depth of the dial; the sizes that follow from the width (head size, key/value heads,
    the MLP's width) are derived again."""
    derived = {"head_dim": None, "n_kv_head": None, "mlp_hidden": None}
    return GPTConfig.from_dict({**config.to_dict(), **depth_shape(depth), **derived})


def count_parameters(config: GPTConfig) -> int:
    """The model's parameters (each tied tensor once), from models of one and two blocks built on PyTorch's meta
    device (shapes only, no memory), so that n_layer=10**9 costs no more than n_layer=1."""
    import torch

    from lucidlm.model import GPT

    with torch.device("meta"):
        one, two = (GPT(replace(config, n_layer=n)).num_params(include_position_embeddings=True) for n in (1, 2))
    return one + (config.n_layer - 1) * (two - one)


@dataclass(frozen=True)
class DepthChoice:
    depth: int
    parameters: int
    seconds: float  # the budget, or longer where the budget falls short of the target loss
    tokens: float  # what the seconds buy at the measured speed
    predicted_loss: float
    why: str


def choose_depth(
    law: ScalingLaw,
    parameters: dict[int, int],
    tokens_per_second: dict[int, float],
    seconds: float,
    data_tokens: int,
    target_loss: float | None = None,
) -> DepthChoice:
    """The depth whose model, trained for `seconds` at its measured `tokens_per_second`, the law predicts the
    lowest loss for, its tokens counted as what they are worth from a corpus of `data_tokens`. With a
    `target_loss` that the budget falls short of, the seconds stretch: the depth that reaches the target soonest,
    trained for as long as that takes (the budget as it is where no depth can reach it on this corpus)."""
    if not tokens_per_second:
        raise ValueError("no depth was measured")
    predicted = {
        depth: law.loss(parameters[depth], effective_tokens(speed * seconds, data_tokens))
        for depth, speed in tokens_per_second.items()
    }
    depth = min(predicted, key=predicted.get)
    alternatives = ", ".join(f"depth {d}: {loss:.3f}" for d, loss in sorted(predicted.items()))
    why = f"the scaling law predicts {alternatives}"
    if target_loss is not None and predicted[depth] > target_loss:
        needed = {
            d: tokens_worth(law.tokens_for(target_loss, parameters[d]), data_tokens) / speed
            for d, speed in tokens_per_second.items()
        }
        soonest = min(needed, key=needed.get)
        if math.isfinite(needed[soonest]):
            depth, stretched = soonest, needed[soonest]
            why += (
                f"; {seconds:g} s fall short of the target {target_loss:g}, which depth {depth} reaches soonest: "
                f"the budget stretched to {stretched:.0f} s"
            )
            seconds, predicted[depth] = stretched, target_loss
        else:
            why += f"; no depth reaches the target {target_loss:g} on a corpus of {data_tokens:,} tokens"
    tokens = tokens_per_second[depth] * seconds
    why = (
        f"{seconds:.0f} s at {tokens_per_second[depth]:,.0f} tokens/s buy depth {depth} ({parameters[depth]:,} "
        f"parameters) {tokens:,.0f} tokens; {why}"
    )
    return DepthChoice(depth, parameters[depth], seconds, tokens, predicted[depth], why)
