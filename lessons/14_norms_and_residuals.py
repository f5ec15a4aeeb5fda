# %% [markdown]
# # Lesson 14: layer norm, RMSNorm and residual connections
#
# Deep stacks of layers are hard to train for two reasons that these three ideas fix.
#
# **Residual connections** add a layer's output to its input, $x_{l+1} = x_l + f(x_l)$, instead of replacing
# it. The identity path lets the signal (and, in training, the gradient) pass through every layer unchanged.
#
# **Layer norm** rescales each token's vector to mean 0 and variance 1 before a layer, then applies a learned
# gain $\gamma$ and bias $\beta$:
# $\mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta$.
# **RMSNorm** (Llama) skips the mean: $\mathrm{RMS}(x) = \gamma \odot x / \sqrt{\mathrm{mean}(x^2) + \epsilon}$.
# A GPT block uses both ideas, pre-norm: $x + \mathrm{attn}(\mathrm{LN}(x))$, then $x + \mathrm{mlp}(\mathrm{LN}(x))$.

# %%
import numpy as np

from lucidlm.scratch.layers import layernorm_forward

rng = np.random.default_rng(0)
C, depth = 64, 50
x0 = rng.normal(size=(32, C))
layers = [rng.normal(size=(C, C)) * 2.0 / np.sqrt(C) for _ in range(depth)]  # weights a little too large


def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0)


def layernorm(x: np.ndarray) -> np.ndarray:
    """Each row of x (..., C) shifted to mean 0 and scaled to variance 1 (1e-5 added to the variance, so that
    a constant row gives zeros, not a division by zero); no gain or bias."""
    ### BEGIN SOLUTION
    return (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    ### END SOLUTION


def run(kind: str) -> list[float]:
    x, spreads = x0, []
    for W in layers:
        if kind == "plain":
            x = relu(x @ W)
        elif kind == "residual":
            x = x + relu(x @ W)
        else:  # pre-norm residual, as in GPT
            x = x + relu(layernorm(x) @ W) * 0.2
        spreads.append(float(x.std()))
    return spreads


for kind in ("plain", "residual", "pre-norm residual"):
    s = run(kind)
    print(f"{kind:18}: std after layers 1, 10, 50 = {s[0]:.3g}, {s[9]:.3g}, {s[-1]:.3g}")
plain, residual, prenorm = run("plain"), run("residual"), run("pre-norm residual")
assert plain[-1] > 1e6 * plain[0]  # each layer multiplies the scale: after 50 it has exploded
assert residual[-1] > 1e6  # residual alone keeps adding: the stream grows and grows
assert 0.5 < prenorm[-1] < 10  # with a norm before each layer the stream stays in range

# %% [markdown]
# ## The product code
# `layernorm_forward` in lucidlm/scratch/layers.py computes exactly this formula, with the gain and bias after
# it (tests/scratch holds the NumPy GPT it belongs to to PyTorch's, logits and gradients). RMSNorm divides by the root mean square
# instead: its outputs have a root mean square of 1, whatever their mean.

# %%
x = rng.normal(3.0, 5.0, size=(4, C))
ours, _ = layernorm_forward(x, np.ones(C), np.zeros(C))
assert np.allclose(ours.mean(axis=-1), 0, atol=1e-6) and np.allclose(ours.std(axis=-1), 1, atol=1e-3)
assert np.allclose(ours, layernorm(x), atol=1e-6)  # the formula above, as the product code computes it


def rmsnorm(x: np.ndarray, gain: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Each row of x (..., C) divided by its root mean square (eps added to the mean square), times the gain
    (C,). No mean is subtracted."""
    ### BEGIN SOLUTION
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * gain
    ### END SOLUTION


rms = rmsnorm(x, np.ones(C))
assert np.allclose(np.sqrt((rms**2).mean(axis=-1)), 1.0) and not np.allclose(rms.mean(axis=-1), 0)
print("after layer norm: mean", np.round(ours.mean(axis=-1), 6), "std", np.round(ours.std(axis=-1), 4))
print("lesson 14 ok: residuals carry the signal through depth, norms keep its scale")
