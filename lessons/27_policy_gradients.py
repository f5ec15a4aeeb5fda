# %% [markdown]
# # Lesson 27: policy gradients, and the group baseline of GRPO
#
# A model can also learn from a **reward**: it writes a reply, a checker scores it (is the answer right?), and
# the model is nudged toward replies that scored well. There is no target to copy, so the cross-entropy of
# lesson 15 does not apply; what we want to raise is the **expected reward** of the policy $\pi_\theta$,
#
# $$J(\theta) = \mathbb{E}_{a \sim \pi_\theta}[r(a)] = \sum_a \pi_\theta(a)\, r(a).$$
#
# Its gradient can be written as an expectation that sampling estimates (the **REINFORCE** identity, from
# $\nabla \pi = \pi \nabla \log \pi$):
#
# $$\nabla J = \sum_a \pi(a)\, r(a)\, \nabla \log \pi(a) = \mathbb{E}_{a \sim \pi}\big[r(a)\, \nabla \log \pi(a)\big].$$
#
# Any **baseline** $b$ that does not depend on the sampled $a$ may be subtracted, because
# $\mathbb{E}[\nabla \log \pi(a)] = \nabla \sum_a \pi(a) = 0$: the mean stays, the variance falls. GRPO (the
# method DeepSeek-R1 and nanochat train with) samples a *group* of replies to one prompt and uses the group's
# own mean reward as the baseline. Everything here can be computed exactly, on a toy "model": a softmax over 6
# replies, scored out of 1 (one is fully right, the others partly, as a grader gives partial credit).

# %%
import numpy as np

rewards = np.array([0.5, 1.0, 0.4, 0.6, 0.7, 0.5])  # reply 1 is right; the others earn partial credit
theta = np.array([0.5, -1.0, 0.3, 0.0, 0.2, 0.1])  # the logits: the right reply is unlikely to start with


def policy(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max())
    return e / e.sum()


def expected_reward(theta: np.ndarray) -> float:
    return float(policy(theta) @ rewards)


def exact_gradient(theta: np.ndarray) -> np.ndarray:
    """dJ/dtheta_b = sum_a r_a pi_a (delta_ab - pi_b) = pi_b (r_b - J)."""
    pi = policy(theta)
    return pi * (rewards - pi @ rewards)


pi = policy(theta)
print(f"pi = {np.round(pi, 3)}, J = {expected_reward(theta):.4f}")
step = 1e-6  # the formula against finite differences of J
numeric = np.array([(expected_reward(theta + step * e) - expected_reward(theta - step * e)) / (2 * step)
                    for e in np.eye(len(theta))])  # fmt: skip
assert np.allclose(exact_gradient(theta), numeric, atol=1e-8)

# %% [markdown]
# ## The sampled gradient matches the exact one
# One sample $a$ gives the estimate $r(a)\,\nabla \log \pi(a)$, where for a softmax
# $\nabla_\theta \log \pi(a) = \text{onehot}(a) - \pi$. Averaged over many samples it converges to $\nabla J$.

# %%
rng = np.random.default_rng(0)


def score_function(actions: np.ndarray) -> np.ndarray:
    """grad log pi(a) for each sampled action: (N, K)."""
    return np.eye(len(theta))[actions] - pi


samples = 400_000
actions = rng.choice(len(theta), size=samples, p=pi)
plain = rewards[actions][:, None] * score_function(actions)  # (N, K): one estimate a sample
error = np.abs(plain.mean(0) - exact_gradient(theta)).max()
print(
    f"REINFORCE over {samples:,} samples: largest error {error:.5f} (exact gradient {np.round(exact_gradient(theta), 4)})"
)
assert error < 0.002

# %% [markdown]
# ## The group baseline lowers the variance
# GRPO samples $G$ replies to the same prompt and gives each the **advantage** $A_i = r_i - \bar r$, its reward
# against the group's mean (and divides by the group's standard deviation, which rescales the step but does
# not change its direction). The mean includes $r_i$ itself, which shrinks the estimate by exactly
# $(G - 1)/G$; the leave-one-out mean (RLOO) has no such factor. We measure the mean and the variance of each
# estimator over many groups of $G = 8$.


# %%
def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """GRPO's advantage without the division: each reward minus the mean of its own group, along the last
    axis. rewards (..., G) -> (..., G)."""
    ### BEGIN SOLUTION
    return rewards - rewards.mean(axis=-1, keepdims=True)
    ### END SOLUTION


G, groups = 8, 50_000
actions = rng.choice(len(theta), size=(groups, G), p=pi)
r = rewards[actions]  # (groups, G)
scores = np.eye(len(theta))[actions] - pi  # (groups, G, K)
estimators = {
    "no baseline": (r[..., None] * scores).mean(1),
    "group mean (GRPO)": (group_advantages(r)[..., None] * scores).mean(1),
    "leave one out": ((r - (r.sum(1, keepdims=True) - r) / (G - 1))[..., None] * scores).mean(1),
}
exact = exact_gradient(theta)
variance = {}
for name, estimates in estimators.items():
    mean = estimates.mean(0)
    variance[name] = float(estimates.var(0).sum())  # the trace of the estimate's covariance
    print(f"{name:18} mean {np.round(mean, 4)}  total variance {variance[name]:.6f}")
assert np.abs(estimators["no baseline"].mean(0) - exact).max() < 0.003
assert np.abs(estimators["leave one out"].mean(0) - exact).max() < 0.003
assert np.abs(estimators["group mean (GRPO)"].mean(0) - (G - 1) / G * exact).max() < 0.003
ratio = variance["leave one out"] / variance["no baseline"]
print(f"the baseline keeps {ratio:.0%} of the variance")
assert ratio < 0.7

# %% [markdown]
# ## Following the sampled gradient
# Gradient ascent with the group estimator, 8 samples a step, raises the expected reward from where it started
# toward 1, as the exact gradient does: the right reply, unlikely at first, becomes the policy's choice.

# %%
theta_exact, theta_sampled = theta.copy(), theta.copy()
for _ in range(400):
    theta_exact += 4.0 * exact_gradient(theta_exact)
    p = policy(theta_sampled)
    group = rng.choice(len(theta), size=G, p=p)
    advantage = group_advantages(rewards[group])
    theta_sampled += 4.0 * (advantage[:, None] * (np.eye(len(theta))[group] - p)).mean(0)
print(f"J: {expected_reward(theta):.3f} -> {expected_reward(theta_exact):.3f} (exact), "
      f"{expected_reward(theta_sampled):.3f} (sampled groups)")  # fmt: skip
assert expected_reward(theta_exact) > 0.95 and expected_reward(theta_sampled) > 0.9
assert policy(theta_sampled).argmax() == 1
print("lesson 27 ok: the REINFORCE gradient matches the exact one, and GRPO's group baseline lowers its variance")
