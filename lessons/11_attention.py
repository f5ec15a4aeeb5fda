# %% [markdown]
# # Lesson 11: scaled dot-product attention
#
# Each token asks a question (its **query** $q$), advertises what it holds (its **key** $k$) and carries a
# payload (its **value** $v$), all three linear maps of its vector. Token $t$'s output is an average of all the
# values, weighted by how well its query matches each key:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}}\right) V .$$
#
# Why $\sqrt{d}$? If the $d$ coordinates of $q$ and $k$ are independent with mean 0 and variance 1, then
# $q \cdot k$ is a sum of $d$ products each of variance 1: its variance is $d$. Large scores push the
# softmax towards a one-hot choice where its gradient vanishes. Dividing by $\sqrt{d}$ brings the variance
# back to 1 whatever the head size.

# %%
import numpy as np

from lucidlm.scratch.layers import attention_forward

rng = np.random.default_rng(0)
for d in (16, 64, 256):
    q, k = rng.normal(size=(20_000, d)), rng.normal(size=(20_000, d))
    raw = (q * k).sum(axis=1)
    scaled = raw / np.sqrt(d)
    print(f"d = {d:3}: variance of q.k = {raw.var():7.1f}, of q.k / sqrt(d) = {scaled.var():.3f}")
    assert abs(raw.var() / d - 1) < 0.05 and abs(scaled.var() - 1) < 0.05


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


scores = rng.normal(size=8) * np.sqrt(256)  # unscaled scores for d = 256
print(
    "largest weight without scaling:",
    round(softmax(scores).max(), 3),
    " with:",
    round(softmax(scores / np.sqrt(256)).max(), 3),
)
assert softmax(scores).max() > softmax(scores / 16).max()

# %% [markdown]
# ## Attention from scratch, and the product code
# Q, K, V come from one input $X$ through three weight matrices. The weights of each row sum to 1, so each
# output is a weighted average of value vectors.

# %%
T, C, d = 5, 12, 4
X = rng.normal(size=(T, C))
Wq, Wk, Wv = (rng.normal(size=(C, d)) for _ in range(3))
Q, K, V = X @ Wq, X @ Wk, X @ Wv


def attention(Q: np.ndarray, K: np.ndarray, V: np.ndarray) -> np.ndarray:
    """softmax(Q K^T / sqrt(d)) V, no mask: Q (T, d), K (S, d), V (S, d_v) -> (T, d_v), each row's weights over
    the S keys summing to 1."""
    ### BEGIN SOLUTION
    return softmax(Q @ K.T / np.sqrt(Q.shape[-1])) @ V
    ### END SOLUTION


weights = softmax(Q @ K.T / np.sqrt(d))  # (T, T)
out = attention(Q, K, V)  # (T, d)
assert np.allclose(weights.sum(axis=1), 1.0)
assert np.allclose(out[2], sum(weights[2, j] * V[j] for j in range(T)))

# lucidlm's attention_forward does the same per head, with a causal mask (lesson 12): compare on the last
# position, which may look at every token.
causal_out, _ = attention_forward(Q[None, None], K[None, None], V[None, None])
assert np.allclose(causal_out[0, 0, -1], out[-1])
print("attention weights of token 2:", np.round(weights[2], 3))
print("lesson 11 ok: softmax(Q K^T / sqrt(d)) V, and the scale keeps the scores' variance at 1")
