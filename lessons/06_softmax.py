# %% [markdown]
# # Lesson 6: softmax and temperature
#
# A language model ends with one number per vocabulary entry, a **logit** $z_i$. Softmax turns logits into
# probabilities: positive, summing to 1, keeping their order,
#
# $$p_i = \frac{e^{z_i}}{\sum_j e^{z_j}} .$$
#
# Adding the same constant to every logit changes nothing ($e^{z_i + c} = e^c e^{z_i}$ cancels), which is how
# code avoids overflow: subtract the largest logit first, so every exponent is at most $e^0 = 1$.

# %%
import numpy as np


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities over the last axis of z (..., V): exp(z / temperature), normalised to sum to 1, without
    overflowing for large z."""
    ### BEGIN SOLUTION
    z = np.asarray(z, dtype=float) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))  # the largest becomes exp(0) = 1: nothing overflows
    return e / e.sum(axis=-1, keepdims=True)
    ### END SOLUTION


logits = np.array([2.0, 1.0, 0.1])
p = softmax(logits)
print("logits:", logits, "-> probabilities:", np.round(p, 4))
assert np.isclose(p.sum(), 1.0) and np.all(p > 0)
assert np.argmax(p) == np.argmax(logits)
assert np.allclose(softmax(logits + 1000.0), p)

with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(np.array([1000.0, 999.0])) / np.exp(np.array([1000.0, 999.0])).sum()
print("naive softmax of [1000, 999]:", naive, " stable:", np.round(softmax([1000.0, 999.0]), 4))
assert np.isnan(naive).all() and np.allclose(softmax([1000.0, 999.0]), softmax([1.0, 0.0]))

# %% [markdown]
# ## Temperature
# Dividing the logits by a temperature $T$ before the softmax sharpens ($T < 1$) or flattens ($T > 1$) the
# distribution. As $T \to 0$ all probability goes to the largest logit (greedy decoding); as $T \to \infty$ it
# becomes uniform. Sampling (lesson 18) uses exactly this.

# %%
for temperature in (0.1, 0.5, 1.0, 2.0, 100.0):
    print(f"T = {temperature:5}: {np.round(softmax(logits, temperature), 3)}")
assert softmax(logits, 0.01)[0] > 0.999
assert np.allclose(softmax(logits, 1e6), 1 / 3, atol=1e-5)
entropies = [-(q * np.log(q)).sum() for q in (softmax(logits, t) for t in (0.5, 1.0, 2.0))]
assert entropies[0] < entropies[1] < entropies[2]  # higher temperature, more uncertainty
print("lesson 6 ok: softmax makes probabilities; temperature sharpens or flattens them")
