"""What a training step minimises, after pretraining and supervised fine-tuning.

- **Next token** (pretraining, SFT): the cross-entropy of each learned target; the model computes it.
- **DPO** (Rafailov et al., 2023): preference pairs, a reply people chose and one they rejected. Under the
  Bradley-Terry model, p(chosen > rejected) = sigmoid(r_c - r_r) for rewards r; DPO takes the reward a policy
  implies, r = beta * (log pi(reply | prompt) - log pi_ref(reply | prompt)) against a frozen reference (the model
  it starts from), and maximises the pairs' likelihood: loss = -log sigmoid(r_c - r_r). No reward model is
  trained and nothing is sampled.
- **GRPO** (Shao et al., 2024): for each prompt a group of replies is sampled and scored by a reward that checks
  the answer; a reply's advantage is its reward against the group's (A = (r - mean) / (std + eps)), so the group
  is its own baseline and no value network is needed. The step maximises PPO's clipped objective,
  min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) with ratio = pi / pi_old for each token of the reply, less
  kl_coef times an estimate of the KL divergence to the reference (Schulman's k3: exp(d) - d - 1, d = log
  pi_ref - log pi, which is never negative).

The functions take log-probabilities, so the lessons and the tests can check them on numbers worked by hand.
Each objective is one small class the backend drives (`Objective`): its loss on one batch, what it reports
beside it, and its validation scores; GRPO's, which samples, is train/rl.py's `GRPO`.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

Metrics = dict[str, torch.Tensor]


class Policy(Protocol):
    """What an objective sees of the model being trained (train/backends.py's TorchBackend)."""

    model: torch.nn.Module  # the plain model, for sampling

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, loss) through the training wrapper (DDP, the compiled blocks)."""

    def reference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen reference's logits (B, T, V): the model the run started from."""


class Objective(Protocol):
    needs_reference: bool  # whether the loss reads a frozen reference model

    def loss(self, policy: Policy, batch) -> tuple[torch.Tensor, Metrics]:
        """What a step minimises on one batch, and what it reports beside the loss."""

    def scores(self, policy: Policy, batch) -> dict[str, float]:
        """{"loss": ..., and the rest} on one validation batch, under no_grad with the model in eval mode."""


class NextToken:
    """Pretraining and supervised fine-tuning: the mean cross-entropy of the learned targets (-1: not learned)."""

    needs_reference = False

    def loss(self, policy: Policy, batch) -> tuple[torch.Tensor, Metrics]:
        x, y = batch
        return policy.forward(x, y)[1], {}

    def scores(self, policy: Policy, batch) -> dict[str, float]:
        return loss_scores(*self.loss(policy, batch))


class DPO:
    """Preference pairs: a batch holds B chosen sequences, then their B rejected ones; `nll` weighs the chosen
    replies' cross-entropy added to the loss (RPO)."""

    needs_reference = True

    def __init__(self, beta: float, nll: float):
        self.beta, self.nll = beta, nll

    def loss(self, policy: Policy, batch) -> tuple[torch.Tensor, Metrics]:
        x, y = batch
        logprobs = sequence_logprobs(policy.forward(x)[0], y)  # (2B,)
        reference = sequence_logprobs(policy.reference_logits(x), y)
        pairs = x.shape[0] // 2
        loss, metrics = dpo_loss(logprobs[:pairs], logprobs[pairs:], reference[:pairs], reference[pairs:], self.beta)
        if self.nll:  # the chosen replies' cross-entropy, a mean over their tokens
            chosen_nll = -logprobs[:pairs].sum() / (y[:pairs] >= 0).sum().clamp(min=1)
            loss = loss + self.nll * chosen_nll
            metrics["chosen_nll"] = chosen_nll.detach()
        return loss, metrics

    def scores(self, policy: Policy, batch) -> dict[str, float]:
        return loss_scores(*self.loss(policy, batch))


def loss_scores(loss: torch.Tensor, metrics: Metrics) -> dict[str, float]:
    return {"loss": loss.item(), **{name: float(value) for name, value in metrics.items()}}


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position, 0 where the target is -1 (not learned). logits (B, T, V), targets (B, T)
    -> (B, T), in fp32."""
    learned = targets >= 0
    picked = torch.gather(F.log_softmax(logits.float(), dim=-1), -1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * learned


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(reply | prompt): the sum over each row's learned targets. (B, T, V), (B, T) -> (B,)."""
    return token_logprobs(logits, targets).sum(dim=-1)


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DPO loss over a batch of pairs, from each reply's summed log-probability under the policy and under the
    reference (all (B,)). Returns (mean loss, {"reward_margin": mean r_c - r_r, "reward_accuracy": the fraction of
    pairs with r_c > r_r, "chosen_reward", "rejected_reward"})."""
    chosen_reward = beta * (chosen - reference_chosen)  # (B,)
    rejected_reward = beta * (rejected - reference_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    metrics = {
        "reward_margin": margin.detach().mean(),
        "reward_accuracy": (margin.detach() > 0).float().mean(),
        "chosen_reward": chosen_reward.detach().mean(),
        "rejected_reward": rejected_reward.detach().mean(),
    }
    return loss, metrics


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantages: each reward against its group's mean, in units of the group's standard deviation.
    rewards (P, G): P prompts, G replies each -> (P, G). A group whose replies all scored alike teaches nothing
    (every advantage is 0)."""
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True, correction=0)
    return (rewards - mean) / (std + eps)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    reference_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's loss for N replies: logprobs, old_logprobs, reference_logprobs and mask are (N, T) over the replies'
    tokens (mask 1 on a reply's tokens), advantages (N,). Each reply's tokens are averaged, then the replies.
    Returns (loss, {"kl": the mean per-token KL estimate, "clipped": the fraction of tokens whose clipped term
    is the one taken, which gets no gradient})."""
    mask = mask.float()
    ratio = torch.exp(logprobs - old_logprobs)  # (N, T)
    advantage = advantages[:, None]
    unclipped = ratio * advantage
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantage
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if reference_logprobs is not None:
        difference = reference_logprobs - logprobs
        kl = torch.exp(difference) - difference - 1
        per_token = per_token + kl_coef * kl
    lengths = mask.sum(dim=-1).clamp(min=1)
    loss = ((per_token * mask).sum(dim=-1) / lengths).mean()
    tokens = mask.sum().clamp(min=1)
    metrics = {
        "kl": ((kl * mask).sum() / tokens).detach(),
        "clipped": (((clipped < unclipped).float() * mask).sum() / tokens).detach(),  # the clip is what counts
    }
    return loss, metrics
