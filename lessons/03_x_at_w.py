# %% [markdown]
# # Lesson 3: why AI code writes `x @ W`
#
# Maths books write a linear map as $y = W x$ with $x$ a column vector. Code that processes many inputs at once
# puts each input in a **row** instead: a batch of $B$ inputs with $n$ features is a matrix $X$ of shape
# $(B, n)$, and one product with a weight matrix $W$ of shape $(n, m)$ transforms all of them together:
#
# $$Y = X W, \qquad (B, n) @ (n, m) \to (B, m).$$
#
# Row $b$ of $Y$ is exactly $x_b W$: the batch changes nothing about each row's result, it only lets the
# hardware do the work in one call. (PyTorch's `nn.Linear` stores its weight as $(m, n)$ and computes
# $X W^\top$: the same thing with the matrix stored transposed.)

# %%
import numpy as np

rng = np.random.default_rng(0)
B, n, m = 4, 3, 2
X = rng.normal(size=(B, n))  # four inputs, one per row
W = rng.normal(size=(n, m))
b = rng.normal(size=m)


def linear(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A layer applied to every row of X: X (..., n) with W (n, m) and b (m,) -> (..., m)."""
    ### BEGIN SOLUTION
    return X @ W + b  # the bias is added to every row (broadcasting)
    ### END SOLUTION


Y = linear(X, W, b)
print("X:", X.shape, " W:", W.shape, " Y = X @ W + b:", Y.shape)
for row in range(B):
    one_at_a_time = X[row] @ W + b
    assert np.allclose(Y[row], one_at_a_time)

# The column-vector form of the maths books gives the same numbers, transposed.
assert np.allclose(Y.T, W.T @ X.T + b[:, None])

# %% [markdown]
# Transformers add one more leading axis: a batch of $B$ sequences of $T$ tokens, each a vector of $C$ numbers,
# is $(B, T, C)$. The same `x @ W` applies the layer to every token of every sequence.

# %%
T, C = 5, 3
tokens = rng.normal(size=(B, T, C))
out = linear(tokens, W, np.zeros(m))  # (B, T, C) @ (C, m) -> (B, T, m)
assert out.shape == (B, T, m)
assert np.allclose(out[2, 4], tokens[2, 4] @ W)
print("(B, T, C) @ (C, m) ->", out.shape)
print("lesson 3 ok: inputs are rows, so a whole batch is one product x @ W")
