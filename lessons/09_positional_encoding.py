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

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import NumpyGPT

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
def sinusoidal_table(T: int, C: int) -> np.ndarray:
    """The (T, C) table of "Attention is all you need": row t, channels 2i and 2i + 1 (i < C / 2) hold
    sin(t / 10000^(2i/C)) and cos(t / 10000^(2i/C))."""
    ### BEGIN SOLUTION
    return np.array(
        [
            [
                np.sin(t / 10000 ** (2 * i / C)) if k == 0 else np.cos(t / 10000 ** (2 * i / C))
                for i in range(C // 2)
                for k in (0, 1)
            ]
            for t in range(T)
        ]
    )
    ### END SOLUTION


table = sinusoidal_table(T, C)
# (tests/lessons/test_lessons_against_pytorch.py checks that lucidlm's PyTorch GPT builds this same table)
with_positions = self_attention(x[order] + table)
assert not np.allclose(with_positions, self_attention(x + table)[order])
print("with positions:    the outputs depend on the order")
print("position 0:", np.round(table[0], 3))
print("position 1:", np.round(table[1], 3))
assert np.allclose(table[:, 0::2] ** 2 + table[:, 1::2] ** 2, 1.0)  # each pair lies on the unit circle

# %% [markdown]
# A learned table does the same job with parameters instead of a formula: one row per position, trained with
# the rest of the model. lucidlm's GPT takes `positions="learned"` (GPT-2's `wpe`, an
# `nn.Embedding(block_size, n_embd)`) or `"sinusoidal"` (the fixed table above). The NumPy GPT has the learned
# one: its gradient reaches the row of every position that was read, and no other.

# %%
gpt = NumpyGPT(GPTConfig(vocab_size=8, block_size=T, n_layer=1, n_head=2, n_embd=C, positions="learned"))
learned = gpt.params["transformer.wpe.weight"]
assert learned.shape == (T, C) and not np.allclose(learned[0], learned[1])
gpt.forward(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))  # three tokens: positions 0, 1 and 2
position_grad = gpt.backward()["transformer.wpe.weight"]
assert np.abs(position_grad[:3]).sum(axis=1).min() > 0 and not position_grad[3:].any()
print("rows of the learned table that a 3-token sequence trains:", np.flatnonzero(np.abs(position_grad).sum(axis=1)))
print("lesson 9 ok: attention alone ignores order; adding position vectors breaks the symmetry")
