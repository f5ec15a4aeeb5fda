# %% [markdown]
# # Lesson 1: the dot product
#
# Everything a language model computes is built from one operation: pair two lists of numbers, multiply each
# pair, add the products up. For vectors $a, b \in \mathbb{R}^n$,
#
# $$a \cdot b = \sum_{i=1}^{n} a_i b_i .$$
#
# When the vectors point the same way the products are mostly positive and the sum is large; when they point
# in unrelated directions the positive and negative products cancel. Divided by the lengths
# $\lVert a \rVert = \sqrt{a \cdot a}$, it is the cosine of the angle between them:
# $\cos\theta = \frac{a \cdot b}{\lVert a\rVert \lVert b\rVert}$. Attention scores (lesson 11) are dot products.

# %%
import numpy as np

a = np.array([1.0, 2.0, 3.0])
b = np.array([4.0, -5.0, 6.0])

pairs = list(zip(a, b, strict=True))
products = [x * y for x, y in pairs]
by_hand = sum(products)
print("pairs:   ", [(float(x), float(y)) for x, y in pairs])
print("products:", [float(p) for p in products])
print("sum:     ", by_hand)
assert by_hand == 1 * 4 + 2 * -5 + 3 * 6 == 12.0
assert by_hand == a @ b == np.dot(a, b)

# %% [markdown]
# ## Similarity of word vectors
# Give each word a vector whose coordinates say how much of some property it has. Here the three
# coordinates are made up by hand: (is an animal, is royal, is a place). Real models learn such vectors
# (lesson 4), with hundreds of coordinates nobody names.

# %%
words = {
    "cat": np.array([0.9, 0.0, 0.1]),
    "dog": np.array([0.8, 0.1, 0.1]),
    "king": np.array([0.1, 0.9, 0.2]),
    "queen": np.array([0.1, 0.95, 0.1]),
    "london": np.array([0.0, 0.2, 0.9]),
}


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """The cosine of the angle between vectors u and v (1-D, the same length): their dot product divided by
    both lengths, a Python float in [-1, 1]."""
    ### BEGIN SOLUTION
    return float(u @ v / (np.sqrt(u @ u) * np.sqrt(v @ v)))
    ### END SOLUTION


for other in ("dog", "king", "london"):
    print(f"cos(cat, {other:6s}) = {cosine(words['cat'], words[other]):.3f}")
assert cosine(words["cat"], words["dog"]) > 0.95 > cosine(words["cat"], words["king"])
assert max(words, key=lambda w: cosine(words["king"], words[w]) if w != "king" else -1) == "queen"

# A vector's dot product with itself is its squared length, and the cosine of a vector with itself is 1.
assert np.isclose(cosine(words["cat"], words["cat"]), 1.0)
assert np.isclose(words["cat"] @ words["cat"], np.linalg.norm(words["cat"]) ** 2)
print("lesson 1 ok: a dot product pairs, multiplies and adds; the cosine measures similarity")
