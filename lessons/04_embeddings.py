# %% [markdown]
# # Lesson 4: tokens and embeddings
#
# A model cannot multiply words. Text is first cut into **tokens** (here: words), each token gets an integer
# **id** from a vocabulary, and each id selects a row of a learned matrix $E \in \mathbb{R}^{V \times C}$: the
# token's **embedding**, a vector of $C$ numbers. Selecting row $i$ is the same as multiplying the one-hot vector
# $e_i$ (all zeros but a 1 at position $i$) by $E$:
#
# $$e_i^\top E = E_{i,:}$$
#
# so an embedding layer is a linear layer whose input is one-hot, computed by indexing instead of multiplying.

# %%
import numpy as np

sentence = "the cat sat on the mat"
vocabulary = sorted(set(sentence.split()))
token_id = {word: i for i, word in enumerate(vocabulary)}
ids = [token_id[word] for word in sentence.split()]
print("vocabulary:", vocabulary)
print("ids:       ", ids)
assert ids == [4, 0, 3, 2, 4, 1]  # "the" is id 4 both times it appears

V, C = len(vocabulary), 3
E = np.random.default_rng(0).normal(size=(V, C))  # the embedding table, learned in training


def embed(ids: list[int], table: np.ndarray) -> np.ndarray:
    """The embedding of each token id: row ids[t] of the table (V, C), for a (T, C) result."""
    ### BEGIN SOLUTION
    return table[ids]
    ### END SOLUTION


looked_up = embed(ids, E)  # (6, 3): one row per token
one_hot = np.eye(V)[ids]  # (6, V)
assert np.allclose(one_hot @ E, looked_up)
assert np.array_equal(looked_up[0], looked_up[4])  # the same token, the same vector
print("embedding of 'cat':", np.round(E[token_id["cat"]], 3))

# %% [markdown]
# Indexing costs nothing next to the product: `one_hot @ E` does $2 \cdot 6 \cdot V \cdot C$ FLOPs of which all
# but $6C$ multiply by zero. During training, the gradient of an embedding flows only into the rows that were
# used, and a token that appears twice receives the sum of both gradients (lucidlm/scratch/layers.py,
# `embedding_backward`).

# %%
upstream = np.ones((len(ids), C))  # pretend every output element has gradient 1
grad_E = one_hot.T @ upstream  # the gradient of one_hot @ E with respect to E
assert np.allclose(grad_E[token_id["the"]], 2.0)  # "the" was used twice
assert np.allclose(grad_E[token_id["cat"]], 1.0)
print("lesson 4 ok: an embedding lookup equals one-hot @ matrix")
