# %% [markdown]
# # Lesson 10: rotary position embeddings (RoPE)
#
# Llama and most recent models do not add positions to the embeddings. They **rotate** the queries and keys
# instead. Channels are taken in pairs $(x_i, x_{i + D/2})$; at position $m$ each pair is rotated by the angle
# $m \theta_i$ with $\theta_i = 10000^{-2i/D}$:
#
# $$\begin{pmatrix} x'_i \\ x'_{i+D/2} \end{pmatrix} =
#   \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{pmatrix}
#   \begin{pmatrix} x_i \\ x_{i+D/2} \end{pmatrix}.$$
#
# A rotation keeps lengths, and the dot product of two rotated vectors depends only on the difference of their
# angles. So the attention score between a query at position $m$ and a key at position $n$ depends on $m - n$
# alone: relative position, for free.

# %%
import numpy as np

from lucidlm.scratch.gpt import rope_tables
from lucidlm.scratch.layers import rope_forward

D = 8
rng = np.random.default_rng(0)
q, k = rng.normal(size=D), rng.normal(size=D)


def rotate(x: np.ndarray, position: int) -> np.ndarray:
    """x (D,), D even, at `position`: each pair (x_i, x_(i + D/2)) turned by the angle position * theta_i,
    theta_i = 10000^(-2i/D), counter-clockwise (the matrix above)."""
    ### BEGIN SOLUTION
    half = x.shape[-1] // 2
    theta = 10000.0 ** (-np.arange(half) * 2 / x.shape[-1])
    angle = position * theta
    first, second = x[:half], x[half:]
    return np.concatenate(
        [first * np.cos(angle) - second * np.sin(angle), first * np.sin(angle) + second * np.cos(angle)]
    )
    ### END SOLUTION


for m, n in [(3, 1), (10, 8), (102, 100)]:
    score = rotate(q, m) @ rotate(k, n)
    print(f"query at {m:3}, key at {n:3} (distance {m - n}): score {score:+.6f}")
scores = [rotate(q, m) @ rotate(k, m - 2) for m in (2, 7, 50, 1000)]
assert np.allclose(scores, scores[0])  # same distance, same score, wherever the pair sits
assert not np.isclose(rotate(q, 5) @ rotate(k, 2), rotate(q, 5) @ rotate(k, 4))
assert np.isclose(np.linalg.norm(rotate(q, 123)), np.linalg.norm(q))  # rotations keep lengths

# %% [markdown]
# The product code does the same with whole tensors: `rope_forward(x, cos, sin)` in lucidlm/scratch/layers.py
# (and `apply_rope` in lucidlm/model/gpt.py, with the same tables) computes $x \cos + \mathrm{roll}(x, D/2)\, s$:
# rolling the channels by half their number puts each pair's partner in its place, and the sin table s carries
# the rotation's minus sign in its first half.

# %%
cos, sin = rope_tables(16, D, 10000.0)
batch = rng.normal(size=(1, 1, 16, D))  # (B, H, T, D)
rotated, _ = rope_forward(batch, cos, sin)
for position in (0, 5, 15):
    assert np.allclose(rotated[0, 0, position], rotate(batch[0, 0, position], position))
assert np.allclose(rotated[0, 0, 0], batch[0, 0, 0])  # position 0 is not rotated
print("lesson 10 ok: with RoPE the score depends only on the relative position")
