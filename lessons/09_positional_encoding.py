# %% [markdown]
# # Lesson 9: positional encoding
#
# Attention (lesson 11) compares every token with every other through dot products. Nothing in that
# computation knows where a token sits: shuffle the input tokens and the outputs are shuffled the same way,
# and otherwise unchanged. Attention is **permutation-equivariant**, so "dog bites man" and "man bites dog" would
# look alike. Positional encodings fix this by adding a vector that depends on the position to each token's
# embedding.
#
# - **Learned** (GPT-2): a second embedding table $P \in \mathbb{R}^{T_{max} \times C}$, row $t$ added at position $t$.
# - **Sinusoidal** (the 2017 Transformer): fixed,
#   $PE_{t, 2i} = \sin(t / 10000^{2i/C})$, $PE_{t, 2i+1} = \cos(t / 10000^{2i/C})$: each pair of channels turns
#   at its own frequency, from once every $2\pi$ positions to once every $2\pi \cdot 10000$.

# %%
import numpy as np
import torch

from lucidlm.model.gpt import sinusoidal_table

rng = np.random.default_rng(0)
T, C = 6, 8


def self_attention(x: np.ndarray) -> np.ndarray:
    """Attention with queries, keys and values all equal to x (no mask): enough to show the symmetry."""
    scores = x @ x.T / np.sqrt(x.shape[1])
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ x


x = rng.normal(size=(T, C))
order = rng.permutation(T)
print("permutation:", order)
assert np.allclose(self_attention(x[order]), self_attention(x)[order])
print("without positions: attention(shuffled x) == shuffled attention(x)")

# %% [markdown]
# With the sinusoidal table added, the same shuffle no longer gives shuffled outputs: position now matters.

# %%
table = np.array(
    [
        [
            np.sin(t / 10000 ** (2 * i / C)) if k == 0 else np.cos(t / 10000 ** (2 * i / C))
            for i in range(C // 2)
            for k in (0, 1)
        ]
        for t in range(T)
    ]
)
assert np.allclose(table, sinusoidal_table(T, C).numpy(), atol=1e-6)  # the product code builds the same table
with_positions = self_attention(x[order] + table)
assert not np.allclose(with_positions, self_attention(x + table)[order])
print("with positions:    the outputs depend on the order")
print("position 0:", np.round(table[0], 3))
print("position 1:", np.round(table[1], 3))
assert np.allclose(table[:, 0::2] ** 2 + table[:, 1::2] ** 2, 1.0)  # each pair lies on the unit circle

# %% [markdown]
# A learned table does the same job with parameters instead of a formula; lucidlm's GPT takes
# `positions="learned"` (an `nn.Embedding(block_size, n_embd)`) or `"sinusoidal"` (a fixed buffer).

# %%
learned = torch.nn.Embedding(T, C)
assert learned.weight.shape == (T, C) and learned.weight.requires_grad
assert not torch.equal(learned(torch.tensor([0])), learned(torch.tensor([1])))
print("lesson 9 ok: attention alone ignores order; adding position vectors breaks the symmetry")
