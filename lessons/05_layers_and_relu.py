# %% [markdown]
# # Lesson 5: layers and ReLU
#
# Stacking linear layers buys nothing: $(x W_1) W_2 = x (W_1 W_2)$, one matrix again. A network gets its power
# from a **nonlinearity** between the layers. The simplest is ReLU, $\mathrm{relu}(z) = \max(z, 0)$, applied to
# each number: it keeps positive values and zeroes the rest, so the map bends at 0.

# %%
import numpy as np

rng = np.random.default_rng(0)
x = rng.normal(size=(5, 4))
W1, W2, W3 = rng.normal(size=(4, 6)), rng.normal(size=(6, 3)), rng.normal(size=(3, 2))
stacked = x @ W1 @ W2 @ W3
collapsed = x @ (W1 @ W2 @ W3)  # one (4, 2) matrix does the same
assert np.allclose(stacked, collapsed)
print("three linear layers == one matrix: max difference", np.abs(stacked - collapsed).max())

# %% [markdown]
# ## XOR: what a linear map cannot do
# XOR is 1 when exactly one input is 1. No linear function $w \cdot x + b$ matches it on the four corners:
# the best least-squares fit predicts 0.5 everywhere. With one hidden ReLU layer the network
# $\mathrm{relu}(x W_1 + b_1) W_2$ fits it exactly, and gradient descent finds such weights.

# %%
X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
y = np.array([0.0, 1.0, 1.0, 0.0])

design = np.hstack([X, np.ones((4, 1))])  # the best linear fit, by least squares
coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
linear = design @ coefficients
print("best linear fit:", np.round(linear, 3))
assert np.allclose(linear, 0.5)


def relu(z: np.ndarray) -> np.ndarray:
    """max(z, 0) element by element, of z's shape."""
    ### BEGIN SOLUTION
    return np.maximum(z, 0)
    ### END SOLUTION


W1, b1 = rng.normal(size=(2, 8)), np.zeros(8)
W2, b2 = rng.normal(size=(8,)) * 0.5, 0.0
for _ in range(3000):  # plain gradient descent on the mean squared error
    h_pre = X @ W1 + b1
    h = relu(h_pre)
    prediction = h @ W2 + b2
    d_prediction = 2 * (prediction - y) / 4
    dW2, db2 = h.T @ d_prediction, d_prediction.sum()
    d_h_pre = np.outer(d_prediction, W2) * (h_pre > 0)  # ReLU passes gradient only where it was positive
    dW1, db1 = X.T @ d_h_pre, d_h_pre.sum(axis=0)
    for parameter, gradient in ((W1, dW1), (b1, db1), (W2, dW2)):
        parameter -= 0.1 * gradient
    b2 -= 0.1 * db2
print("ReLU network:   ", np.round(prediction, 3))
assert np.abs(prediction - y).max() < 0.05
print("lesson 5 ok: linear layers collapse; a ReLU between them fits XOR")
