# %% [markdown]
# # Lesson 26: preference tuning with DPO
#
# Some replies are better than others in ways that no single right answer captures. Preference data says it
# pair by pair: for a prompt $x$, people **chose** reply $y_c$ over $y_r$, which they **rejected**.
#
# **The Bradley-Terry model** (1952) turns scores into preferences: if a reply's quality is a reward $r(x, y)$,
#
# $$p(y_c \succ y_r \mid x) = \frac{e^{r(x, y_c)}}{e^{r(x, y_c)} + e^{r(x, y_r)}} = \sigma\big(r(x, y_c) - r(x, y_r)\big).$$
#
# RLHF fits a reward model to the pairs, then trains the policy to earn reward without drifting far from the
# model it started from, $\pi_\text{ref}$. **DPO** (Rafailov et al., 2023) notices that the best policy for that
# goal has a closed form, and turned around, it says which reward a policy implies:
#
# $$r(x, y) = \beta \log \frac{\pi_\theta(y \mid x)}{\pi_\text{ref}(y \mid x)} + \text{(a term of } x \text{ alone)}.$$
#
# Put into Bradley-Terry, the term of $x$ cancels, and the pairs' negative log-likelihood is a loss on the
# policy itself, with no reward model and no sampling:
#
# $$\mathcal{L}_\text{DPO} = -\log \sigma\Big(\beta \log \frac{\pi_\theta(y_c \mid x)}{\pi_\text{ref}(y_c \mid x)}
#   - \beta \log \frac{\pi_\theta(y_r \mid x)}{\pi_\text{ref}(y_r \mid x)}\Big).$$
#
# The difference inside is the **implicit reward margin**. Below: the Bradley-Terry probability, the loss from
# log-probabilities, its value where training starts ($\ln 2$), and a small GPT whose margin grows as it learns
# which of two replies is preferred, all in NumPy (`lucidlm train` does the same in PyTorch with
# `--set objective=dpo`; the tests hold the two losses and gradients to each other).

# %%
import math

import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import AdamW, NumpyGPT


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)  # log(1 / (1 + e^-z)), without overflow for any z


def dpo_loss(
    policy_chosen: np.ndarray,
    policy_rejected: np.ndarray,
    reference_chosen: np.ndarray,
    reference_rejected: np.ndarray,
    beta: float,
) -> tuple[float, np.ndarray, dict]:
    """The mean DPO loss over the pairs from their sequence log-probabilities (P,) each, its gradient with
    respect to the policy's log-probabilities (chosen and rejected, (2P,)), and the margin and accuracy."""
    ### BEGIN SOLUTION
    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))  # (P,)
    loss = float(-log_sigmoid(margin).mean())
    dmargin = -(1 - np.exp(log_sigmoid(margin))) / len(margin)  # d(-log sigmoid m)/dm = -(1 - sigmoid m)
    gradient = np.concatenate([beta * dmargin, -beta * dmargin])
    return loss, gradient, {"reward_margin": float(margin.mean()), "reward_accuracy": float((margin > 0).mean())}
    ### END SOLUTION


# Bradley-Terry: a reward 2 higher is preferred with probability sigmoid(2)
reward_chosen, reward_rejected = 1.5, -0.5
p_prefer = math.exp(reward_chosen) / (math.exp(reward_chosen) + math.exp(reward_rejected))
print(f"p(chosen preferred) = {p_prefer:.4f} = sigmoid(2) = {1 / (1 + math.exp(-2)):.4f}")
assert abs(p_prefer - 1 / (1 + math.exp(-2))) < 1e-12

# the loss from log-probabilities, by hand and with dpo_loss (the tests hold it to lucidlm's trainer's)
beta = 0.1
policy_chosen, policy_rejected = np.array([-12.0]), np.array([-15.0])
reference_chosen, reference_rejected = np.array([-13.0]), np.array([-14.0])
margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
loss, _, metrics = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
print(f"margin {margin[0]:.3f}, loss {loss:.4f} = -log sigmoid(margin)")
assert abs(loss + math.log(1 / (1 + math.exp(-margin[0])))) < 1e-12
assert abs(metrics["reward_margin"] - 0.2) < 1e-12

# %% [markdown]
# ## A small GPT learns a preference
# The prompts ask for a word; both replies are spelled from the word, but people prefer it reversed ("abc" ->
# "cba") to repeated as it is. The policy starts as the reference, so every margin is 0 and the loss is exactly
# $\ln 2$. A batch holds each pair's two sequences; targets are $-1$ outside the reply, so `sequence_logprobs`
# sums $\log \pi(y \mid x)$ over the reply's tokens alone, and says how that sum changes with each logit:
# $\partial \log \pi(y_t) / \partial z_{t,v} = [v = y_t] - \pi(v)$ (lesson 7), which the NumPy GPT's
# backward pass carries to every weight.

# %%
words = ["abc", "dog", "sun", "map", "kit", "pen", "rug", "owl", "fig", "jam", "bus", "cot"]
vocabulary = sorted(set("".join(words)) | set("> |"))
encode = {c: i for i, c in enumerate(vocabulary)}.__getitem__


def sequences(replies: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each word's prompt "word>" and its reply, with targets on the reply (and its end mark '|') alone."""
    x, y = [], []
    for word, reply in zip(words, replies, strict=True):
        ids = [encode(c) for c in f"{word}>{reply}|"]
        x.append(ids[:-1])
        y.append([-1] * len(word) + ids[len(word) + 1 :])
    return np.array(x), np.array(y)


def sequence_logprobs(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sum of log pi(target) where the target is not -1, (B,), and its gradient on the logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (B, T, V)
    kept = targets != -1
    safe = np.where(kept, targets, 0)[..., None]
    picked = np.take_along_axis(log_probs, safe, axis=-1)[..., 0] * kept  # (B, T)
    gradient = -np.exp(log_probs)
    np.put_along_axis(gradient, safe, np.take_along_axis(gradient, safe, axis=-1) + 1, axis=-1)
    return picked.sum(axis=1), gradient * kept[..., None]


x_chosen, y_chosen = sequences([w[::-1] for w in words])
x_rejected, y_rejected = sequences(words)
x, y = np.concatenate([x_chosen, x_rejected]), np.concatenate([y_chosen, y_rejected])  # chosen first
config = GPTConfig(vocab_size=len(vocabulary), block_size=16, n_layer=2, n_head=2, n_embd=32)
policy, reference = NumpyGPT(config, seed=0), NumpyGPT(config, seed=0)  # the same weights
optimizer = AdamW(policy.params, lr=3e-3)
pairs = len(words)
reference_logprobs, _ = sequence_logprobs(reference.forward(x)[0], y)
history = []
for _ in range(60):
    logprobs, dlogprobs_dlogits = sequence_logprobs(policy.forward(x)[0], y)  # (2 * pairs,)
    loss, dloss_dlogprobs, metrics = dpo_loss(logprobs[:pairs], logprobs[pairs:], reference_logprobs[:pairs],
                                              reference_logprobs[pairs:], beta=0.5)  # fmt: skip
    history.append((loss, metrics["reward_margin"], metrics["reward_accuracy"]))
    # the chain rule: d loss / d logits = d loss / d logprob (per row) * d logprob / d logits
    optimizer.step(policy.backward(dloss_dlogprobs[:, None, None] * dlogprobs_dlogits))
for step in (0, 10, 30, 59):
    print(
        f"step {step:2}: loss {history[step][0]:.4f}, margin {history[step][1]:+.3f}, accuracy {history[step][2]:.2f}"
    )
assert abs(history[0][0] - math.log(2)) < 1e-6 and history[0][1] == 0.0
assert history[-1][1] > history[30][1] > history[10][1] > 0  # the margin grows
assert history[-1][2] == 1.0 and history[-1][0] < 0.1

# %% [markdown]
# ## What moved
# DPO raises the chosen reply's likelihood *relative to the reference* and lowers the rejected one's. Both can
# fall in absolute terms: only the difference is asked for, which is why $\beta$ and the reference matter (a
# larger $\beta$ keeps the policy closer to $\pi_\text{ref}$). Here the policy now prefers the reversed word.

# %%
after, _ = sequence_logprobs(policy.forward(x)[0], y)
before = reference_logprobs
change_chosen = (after[:pairs] - before[:pairs]).mean()
change_rejected = (after[pairs:] - before[pairs:]).mean()
print(f"log pi(chosen) moved {change_chosen:+.2f}, log pi(rejected) moved {change_rejected:+.2f}")
assert change_chosen - change_rejected > 2
assert bool((after[:pairs] > after[pairs:]).all())
print("lesson 26 ok: Bradley-Terry, the DPO loss from log-probabilities, and a margin that grows")
