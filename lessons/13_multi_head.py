# %% [markdown]
# # Lesson 13: multi-head attention
#
# One attention pattern per layer is limiting: a token may need to look at the previous word for grammar and at
# a name far back for meaning. Multi-head attention runs $H$ attentions side by side, each on its own slice of
# $D = C / H$ channels of $Q$, $K$ and $V$, and concatenates their outputs. The work is the same as one big
# head; only the softmax is taken per slice.
#
# In code the heads are not a loop: reshape $(B, T, C) \to (B, T, H, D)$, move the head axis forward to
# $(B, H, T, D)$, and the batched matrix product treats each head as another batch entry.

# %%
import numpy as np

rng = np.random.default_rng(0)
B, T, C, H = 2, 5, 12, 3
D = C // H
q, k, v = (rng.normal(size=(B, T, C)) for _ in range(3))
mask = np.triu(np.full((T, T), -np.inf), k=1)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# one head at a time, on slices of the channels
loop = np.zeros((B, T, C))
for h in range(H):
    part = slice(h * D, (h + 1) * D)
    weights = softmax(q[..., part] @ k[..., part].transpose(0, 2, 1) / np.sqrt(D) + mask)
    loop[..., part] = weights @ v[..., part]


# all heads at once
def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """x (B, T, C) -> (B, n_head, T, C / n_head): head h gets channels h D to (h + 1) D of every position."""
    ### BEGIN SOLUTION
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)
    ### END SOLUTION


weights = softmax(split_heads(q, H) @ split_heads(k, H).transpose(0, 1, 3, 2) / np.sqrt(D) + mask)  # (B, H, T, T)


def merge_heads(y: np.ndarray) -> np.ndarray:
    """The heads' outputs (B, H, T, D) back side by side: (B, T, H * D), head h in channels h D to (h + 1) D."""
    ### BEGIN SOLUTION
    B, H, T, D = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, H * D)
    ### END SOLUTION


together = merge_heads(weights @ split_heads(v, H))
assert np.allclose(loop, together)
print("loop over heads == reshape form; max difference", np.abs(loop - together).max())
print("weights shape (B, H, T, T):", weights.shape)
assert not np.allclose(weights[0, 0], weights[0, 1])  # each head has its own pattern

# %% [markdown]
# **Grouped-query attention** (Llama 2 and later) keeps $H$ query heads but fewer key/value heads, each shared by
# a group of query heads; it shrinks the KV cache (lesson 19). lucidlm's `n_kv_head` setting does this.

# %%
KV = 1  # one key/value head shared by all three query heads
k_shared, v_shared = k[..., :D], v[..., :D]
gqa = softmax(split_heads(q, H) @ np.repeat(k_shared[:, None], H, axis=1).transpose(0, 1, 3, 2) / np.sqrt(D) + mask)
assert gqa.shape == (B, H, T, T)
print(
    f"grouped-query: {H} query heads share {KV} key/value head; the cache stores {KV * D} numbers per token "
    f"instead of {C}"
)
print("lesson 13 ok: heads are slices of the channels, computed together by reshaping")
