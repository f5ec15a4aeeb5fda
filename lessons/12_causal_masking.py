# %% [markdown]
# # Lesson 12: causal masking
#
# A language model predicts token $t + 1$ from tokens $1 \dots t$. During training all positions are computed
# at once, so position $t$ must not see the tokens after it, or predicting them would be copying. Before the
# softmax, the scores of future keys are set to $-\infty$; $e^{-\infty} = 0$, so they get no weight:
#
# $$\mathrm{scores}_{ij} = \begin{cases} q_i \cdot k_j / \sqrt{d} & j \le i \\ -\infty & j > i \end{cases}$$

# %%
import numpy as np

from lucidlm.model import GPTConfig
from lucidlm.scratch import NumpyGPT
from lucidlm.scratch.layers import attention_forward


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Attention in which position t sees positions 0..t only: q, k, v (T, d) -> (T, d). The scores above the
    diagonal (a key after the query) are -inf before the softmax, so their weights are exactly 0."""
    ### BEGIN SOLUTION
    T, d = q.shape
    scores = q @ k.T / np.sqrt(d) + np.triu(np.full((T, T), -np.inf), k=1)  # the diagonal stays: t sees t
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True) @ v
    ### END SOLUTION


rng = np.random.default_rng(0)
T, d = 6, 4
q, k, v = (rng.normal(size=(1, 1, T, d)) for _ in range(3))
out, cache = attention_forward(q, k, v)  # lucidlm's, for every batch row and head at once
assert np.allclose(causal_attention(q[0, 0], k[0, 0], v[0, 0]), out[0, 0])
weights = cache[3][0, 0]
print("attention weights (row = query, column = key):")
print(np.round(weights, 2))
assert np.all(np.triu(weights, k=1) == 0)  # nothing above the diagonal
assert np.allclose(weights.sum(axis=1), 1.0)
assert np.allclose(weights[0], np.eye(T)[0])  # the first token can only look at itself

# %% [markdown]
# ## The test that matters: the future does not leak
# Change the tokens after position 3: the outputs at positions 0..3 stay exactly the same.

# %%
k2, v2 = k.copy(), v.copy()
k2[..., 4:, :] = rng.normal(size=(2, d))
v2[..., 4:, :] = rng.normal(size=(2, d))
out2, _ = attention_forward(q, k2, v2)
assert np.array_equal(out[..., :4, :], out2[..., :4, :])
assert not np.allclose(out[..., 4:, :], out2[..., 4:, :])

model = NumpyGPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16), seed=0)  # NumPy's GPT
tokens = np.array([[1, 2, 3, 4, 5, 6, 7, 8]])
changed = tokens.copy()
changed[0, 5:] = [9, 9, 9]
a, b = model.forward(tokens)[0], model.forward(changed)[0]
assert np.array_equal(a[0, :5], b[0, :5])
print("changing tokens 5..7 leaves the whole GPT's logits at 0..4 unchanged:", bool(np.array_equal(a[0, :5], b[0, :5])))
print("lesson 12 ok: the causal mask hides the future")
