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
# which of two replies is preferred.

# %%
import math

import torch

from lucidlm.model import GPT, GPTConfig
from lucidlm.train.objectives import dpo_loss, sequence_logprobs

# Bradley-Terry: a reward 2 higher is preferred with probability sigmoid(2)
reward_chosen, reward_rejected = 1.5, -0.5
p_prefer = math.exp(reward_chosen) / (math.exp(reward_chosen) + math.exp(reward_rejected))
print(f"p(chosen preferred) = {p_prefer:.4f} = sigmoid(2) = {1 / (1 + math.exp(-2)):.4f}")
assert abs(p_prefer - 1 / (1 + math.exp(-2))) < 1e-12

# the loss from log-probabilities, by hand and as lucidlm's trainer computes it
beta = 0.1
policy_chosen, policy_rejected = torch.tensor([-12.0]), torch.tensor([-15.0])
reference_chosen, reference_rejected = torch.tensor([-13.0]), torch.tensor([-14.0])
margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
loss, metrics = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
print(f"margin {margin.item():.3f}, loss {loss.item():.4f} = -log sigmoid(margin)")
assert abs(loss.item() + math.log(1 / (1 + math.exp(-margin.item())))) < 1e-6
assert abs(metrics["reward_margin"].item() - 0.2) < 1e-6

# %% [markdown]
# ## A small GPT learns a preference
# The prompts ask for a word; both replies are spelled from the word, but people prefer it reversed ("abc" ->
# "cba") to repeated as it is. The policy starts as the reference, so every margin is 0 and the loss is exactly
# $\ln 2$. A batch holds each pair's two sequences; targets are $-1$ outside the reply, so `sequence_logprobs`
# sums $\log \pi(y \mid x)$ over the reply's tokens alone.

# %%
words = ["abc", "dog", "sun", "map", "kit", "pen", "rug", "owl", "fig", "jam", "bus", "cot"]
vocabulary = sorted(set("".join(words)) | set("> |"))
encode = {c: i for i, c in enumerate(vocabulary)}.__getitem__


def sequences(replies: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word's prompt "word>" and its reply, with targets on the reply (and its end mark '|') alone."""
    x, y = [], []
    for word, reply in zip(words, replies, strict=True):
        ids = [encode(c) for c in f"{word}>{reply}|"]
        x.append(ids[:-1])
        y.append([-1] * len(word) + ids[len(word) + 1 :])
    return torch.tensor(x), torch.tensor(y)


x_chosen, y_chosen = sequences([w[::-1] for w in words])
x_rejected, y_rejected = sequences(words)
x, y = torch.cat([x_chosen, x_rejected]), torch.cat([y_chosen, y_rejected])  # chosen first, as in training
torch.manual_seed(0)
policy = GPT(GPTConfig(vocab_size=len(vocabulary), block_size=16, n_layer=2, n_head=2, n_embd=32))
reference = GPT(policy.config)
reference.load_state_dict(policy.state_dict())
reference.requires_grad_(False)
optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
pairs = len(words)
history = []
for _ in range(60):
    logprobs = sequence_logprobs(policy(x)[0], y)  # (2 * pairs,)
    with torch.no_grad():
        reference_logprobs = sequence_logprobs(reference(x)[0], y)
    loss, metrics = dpo_loss(logprobs[:pairs], logprobs[pairs:], reference_logprobs[:pairs],
                             reference_logprobs[pairs:], beta=0.5)  # fmt: skip
    history.append((loss.item(), metrics["reward_margin"].item(), metrics["reward_accuracy"].item()))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
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
with torch.no_grad():
    after = sequence_logprobs(policy(x)[0], y)
    before = sequence_logprobs(reference(x)[0], y)
change_chosen = (after[:pairs] - before[:pairs]).mean().item()
change_rejected = (after[pairs:] - before[pairs:]).mean().item()
print(f"log pi(chosen) moved {change_chosen:+.2f}, log pi(rejected) moved {change_rejected:+.2f}")
assert change_chosen - change_rejected > 2
assert bool((after[:pairs] > after[pairs:]).all())
print("lesson 26 ok: Bradley-Terry, the DPO loss from log-probabilities, and a margin that grows")
