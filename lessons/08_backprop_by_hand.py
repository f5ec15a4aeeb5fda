# %% [markdown]
# # Lesson 8: backpropagation by hand
#
# A tiny next-word model for "the cat sat on the mat". It reads the two previous words and predicts the next:
#
# $$x = [E_{w_1}; E_{w_2}], \quad a = x W_1 + b_1, \quad h = \mathrm{relu}(a), \quad z = h W_2 + b_2,
# \quad \ell = -\log \mathrm{softmax}(z)_{\text{target}} .$$
#
# Training needs $\partial \ell / \partial \theta$ for every parameter. The chain rule gives them backwards,
# one step at a time, each step using only the gradient from above and what the forward pass computed:
#
# - $\partial \ell / \partial z = \mathrm{softmax}(z) - \mathrm{onehot}(\text{target})$ (lesson 7's loss and the softmax together)
# - $\partial \ell / \partial W_2 = h^\top \, \partial \ell/\partial z$, $\;\partial \ell/\partial b_2 = \sum \partial \ell/\partial z$, $\;\partial \ell/\partial h = \partial \ell/\partial z \, W_2^\top$
# - $\partial \ell / \partial a = \partial \ell/\partial h \odot [a > 0]$ (ReLU lets gradient through where it was positive)
# - $\partial \ell / \partial W_1 = x^\top \partial \ell/\partial a$, $\;\partial \ell/\partial x = \partial \ell/\partial a \, W_1^\top$
# - each half of $\partial \ell/\partial x$ is added to the embedding row it came from.

# %%
import numpy as np

words = "<s> the cat sat on the mat </s>".split()
vocabulary = sorted(set(words))
V, C, H = len(vocabulary), 8, 16
ids = [vocabulary.index(w) for w in words]
contexts = np.array([(ids[i], ids[i + 1]) for i in range(len(ids) - 2)])  # two previous words
targets = np.array(ids[2:])  # the word after them
rng = np.random.default_rng(0)
params = {
    "E": rng.normal(0, 0.5, (V, C)),
    "W1": rng.normal(0, 0.5, (2 * C, H)),
    "b1": np.zeros(H),
    "W2": rng.normal(0, 0.5, (H, V)),
    "b2": np.zeros(V),
}


def forward(params: dict) -> tuple[float, dict]:
    x = params["E"][contexts].reshape(len(contexts), 2 * C)  # (N, 2C): the two embeddings side by side
    a = x @ params["W1"] + params["b1"]
    h = np.maximum(a, 0)
    z = h @ params["W2"] + params["b2"]
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(len(targets)), targets]).mean()
    return float(loss), {"x": x, "a": a, "h": h, "probs": probs}


def linear_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of y = x @ W + b, given dout = dloss/dy: x (N, n), W (n, m), dout (N, m) ->
    (dx (N, n), dW (n, m), db (m,)). Each row of x is one position; the parameters' gradients sum over them."""
    ### BEGIN SOLUTION
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)
    ### END SOLUTION


def backward(params: dict, cache: dict) -> dict:
    N = len(targets)
    dz = cache["probs"].copy()
    dz[np.arange(N), targets] -= 1
    dz /= N  # the loss is a mean over N positions
    grads = {}
    dh, grads["W2"], grads["b2"] = linear_backward(dz, cache["h"], params["W2"])
    da = dh * (cache["a"] > 0)
    dx, grads["W1"], grads["b1"] = linear_backward(da, cache["x"], params["W1"])
    dx = dx.reshape(N, 2, C)
    grads["E"] = np.zeros_like(params["E"])
    np.add.at(grads["E"], contexts, dx)  # a word used twice collects both gradients
    return grads


# %% [markdown]
# ## Check every gradient against finite differences
# $\partial \ell/\partial \theta_k \approx (\ell(\theta + h e_k) - \ell(\theta - h e_k)) / 2h$, one coordinate
# at a time. Slow, but it needs no calculus, so it catches any mistake in the hand-derived formulas.

# %%
loss, cache = forward(params)
grads = backward(params, cache)
for name, value in params.items():
    numeric = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        original = value[index]
        value[index] = original + 1e-6
        plus = forward(params)[0]
        value[index] = original - 1e-6
        minus = forward(params)[0]
        value[index] = original
        numeric[index] = (plus - minus) / 2e-6
    error = np.abs(numeric - grads[name]).max() / max(np.abs(numeric).max(), 1e-12)
    print(f"{name:2}: relative error {error:.1e}")
    assert error < 1e-6, name

# %% [markdown]
# ## Train with gradient descent
# $\theta \leftarrow \theta - \eta \, \partial \ell/\partial \theta$, until the model predicts every next word.

# %%
print(f"step    0: loss {loss:.4f} (ln V = {np.log(V):.4f})")
for step in range(1, 301):
    loss, cache = forward(params)
    for name, gradient in backward(params, cache).items():
        params[name] -= 0.5 * gradient
    if step % 100 == 0:
        print(f"step {step:4}: loss {loss:.4f}")
assert loss < 0.05
predicted = cache["probs"].argmax(axis=1)
assert np.array_equal(predicted, targets)

sentence = ["<s>", "the"]
while sentence[-1] != "</s>" and len(sentence) < 10:
    context = np.array([[vocabulary.index(sentence[-2]), vocabulary.index(sentence[-1])]])
    x = params["E"][context].reshape(1, 2 * C)
    z = np.maximum(x @ params["W1"] + params["b1"], 0) @ params["W2"] + params["b2"]
    sentence.append(vocabulary[int(z.argmax())])
print("generated:", " ".join(sentence))
assert sentence == words
print("lesson 8 ok: hand-derived gradients match finite differences and train the model to the sentence")
