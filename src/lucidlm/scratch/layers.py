"""Every layer of the GPT as a pair of NumPy functions, in the style of llm.c's train_gpt2.c.

`*_forward(inputs..., parameters...)` returns `(out, cache)`: the result and exactly what the backward pass will
need. `*_backward(dout, cache)` takes the gradient of the loss with respect to `out` and returns the gradients
with respect to each input and parameter, in the order the forward took them. Nothing here knows about the
other layers, and there is no autograd: each backward is the chain rule written out by hand.

Shapes: B batch, T time, C channels, H heads, D head size, V vocabulary.
Weights keep PyTorch's (out_features, in_features) layout so that names and shapes match the PyTorch GPT
exactly; a linear layer therefore computes x @ W.T.
"""

from __future__ import annotations

import math

import numpy as np

# Python floats, not NumPy scalars: NumPy would promote a float32 array times a float64 scalar to float64.
GELU_SCALE = math.sqrt(2.0 / math.pi)


def embedding_forward(ids: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Row `ids[b, t]` of the table: (B, T) -> (B, T, C)."""
    return weight[ids], (ids, weight.shape)


def embedding_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Each row's gradient is the sum of the gradients of every position that looked it up.

    That is `np.add.at(dweight, ids, dout)`; sorting the ids and summing each run of equal ids with
    `np.add.reduceat` gives the same sums several times faster."""
    ids, shape = cache
    flat_ids, flat_dout = ids.reshape(-1), dout.reshape(-1, shape[1])
    order = np.argsort(flat_ids, kind="stable")
    sorted_ids = flat_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])  # where each run of one id begins
    dweight = np.zeros(shape, dtype=dout.dtype)
    dweight[sorted_ids[starts]] = np.add.reduceat(flat_dout[order], starts, axis=0)
    return dweight


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, tuple]:
    """x (..., in) @ weight.T (in, out) + bias: (..., in) -> (..., out).

    The leading axes are flattened first: one (B*T, in) @ (in, out) product, rather than B products of (T, in),
    which is what NumPy would do for a 3-D array, and which keeps the BLAS kernel far from its best speed."""
    flat_x = x.reshape(-1, x.shape[-1])
    out = flat_x @ weight.T
    if bias is not None:
        out += bias
    return out.reshape(*x.shape[:-1], weight.shape[0]), (flat_x, x.shape, weight, bias is not None)


def linear_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    flat_x, x_shape, weight, has_bias = cache
    flat_dout = dout.reshape(-1, dout.shape[-1])
    dx = (flat_dout @ weight).reshape(x_shape)  # (N, out) @ (out, in)
    dweight = flat_dout.T @ flat_x  # (out, in): every position's outer product, summed
    dbias = flat_dout.sum(axis=0) if has_bias else None
    return dx, dweight, dbias


def layernorm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, eps: float = 1e-5
) -> tuple[np.ndarray, tuple]:
    """Normalise each position's C channels to mean 0 and variance 1, then scale and shift."""
    normalized = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((normalized * normalized).mean(axis=-1, keepdims=True) + eps)  # 1 / standard deviation
    normalized *= rstd
    out = normalized * weight
    if bias is not None:
        out += bias
    return out, (normalized, rstd, weight, bias is not None)


def layernorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    normalized, rstd, weight, has_bias = cache
    flat = dout.reshape(-1, dout.shape[-1])
    dweight = (flat * normalized.reshape(flat.shape)).sum(axis=0)
    dbias = flat.sum(axis=0) if has_bias else None
    dnormalized = dout * weight
    # Mean and variance depend on every channel, so each input's gradient has two correction terms.
    dx = rstd * (
        dnormalized
        - dnormalized.mean(axis=-1, keepdims=True)
        - normalized * (dnormalized * normalized).mean(axis=-1, keepdims=True)
    )
    return dx, dweight, dbias


def gelu_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """GPT-2's GELU, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), computed as x * sigmoid(2u).

    The two are equal (0.5 (1 + tanh u) = sigmoid(2u)); the sigmoid needs one exp, which NumPy computes about
    twice as fast as tanh. x * x * x, not x**3: NumPy computes a power through pow(), far slower."""
    minus_two_u = x * x
    minus_two_u *= -2 * GELU_SCALE * 0.044715
    minus_two_u -= 2 * GELU_SCALE
    minus_two_u *= x
    with np.errstate(over="ignore"):  # exp(-2u) may overflow to inf for very negative x; sigmoid is then 0
        sigmoid = np.exp(minus_two_u, out=minus_two_u)  # the buffer is reused: sigmoid = 1 / (1 + exp(-2u))
    sigmoid += 1.0
    np.divide(1.0, sigmoid, out=sigmoid)
    return x * sigmoid, (x, sigmoid)


def gelu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    x, sigmoid = cache
    # d/dx [x s(2u)] = s + x s (1 - s) 2 du/dx, with du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    # Computed in place, in two buffers: each temporary array of this size costs as much as the arithmetic.
    slope = x * x
    slope *= 2 * GELU_SCALE * 3 * 0.044715
    slope += 2 * GELU_SCALE
    slope *= x
    sigmoid_slope = 1.0 - sigmoid
    sigmoid_slope *= sigmoid
    slope *= sigmoid_slope
    slope += sigmoid
    slope *= dout
    return slope


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    return np.maximum(x, 0), (x > 0,)


def relu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    (positive,) = cache
    return dout * positive


def rope_forward(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Rotate each pair (x_i, x_{i+D/2}) by its position's angle: rolling the channels by D/2 puts each pair's
    partner in its place, and `sin` carries the minus sign (rope_tables), as in the PyTorch GPT's apply_rope.
    x (B, H, T, D); cos, sin (T, D)."""
    return x * cos + np.roll(x, x.shape[-1] // 2, axis=-1) * sin, (cos, sin)


def rope_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    cos, sin = cache
    # y = x cos + roll(x) sin is linear in x; its transpose rolls back, and rolling by D/2 is its own inverse.
    return dout * cos + np.roll(dout * sin, dout.shape[-1] // 2, axis=-1)


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Causal softmax(q k^T / sqrt(D)) v for every head at once. q: (B, H, T, D); k, v: (B, H, S, D) with S >= T,
    the last T of the S positions being q's (with a KV cache, the first S - T are the cached ones) -> (B, H, T, D)."""
    (T, D), S = q.shape[-2:], k.shape[-2]
    scores = q @ k.swapaxes(-1, -2) / math.sqrt(D)  # (B, H, T, S)
    scores += np.triu(np.full((T, S), -np.inf, dtype=scores.dtype), k=1 + S - T)  # the future: exp(-inf) = 0
    scores -= scores.max(axis=-1, keepdims=True)  # softmax is unchanged by a shift, and exp cannot overflow
    weights = np.exp(scores, out=scores)  # in place: the scores are not needed again
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v, (q, k, v, weights)


def attention_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q, k, v, weights = cache
    dweights = dout @ v.swapaxes(-1, -2)  # (B, H, T, T)
    dv = weights.swapaxes(-1, -2) @ dout
    # Softmax backward: d score_j = w_j (d w_j - sum_i w_i d w_i). Masked entries have w = 0, so they get 0.
    # (In place in dweights' buffer, which is not needed afterwards.)
    dscores = dweights
    dscores -= (dweights * weights).sum(axis=-1, keepdims=True)
    dscores *= weights
    dscores /= math.sqrt(q.shape[-1])
    return dscores @ k, dscores.swapaxes(-1, -2) @ q, dv


def crossentropy_forward(logits: np.ndarray, targets: np.ndarray) -> tuple[float, tuple]:
    """Mean of -log softmax(logits)[target] over the positions whose target is not -1, as PyTorch's
    cross_entropy with ignore_index=-1 (lucidlm's loss mask: lesson 24). logits (B, T, V), targets (B, T)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    kept = targets != -1
    safe = np.where(kept, targets, 0)[..., None]  # (B, T, 1): any index where the target is ignored
    picked = np.take_along_axis(log_probs, safe, axis=-1)[..., 0]
    return float(-(picked * kept).sum() / kept.sum()), (log_probs, safe, kept)


def crossentropy_backward(dloss: float, cache: tuple) -> np.ndarray:
    """The gradient of softmax + cross-entropy together is simply (probabilities - one_hot) / N, and 0 where
    the target is ignored."""
    log_probs, safe, kept = cache
    dlogits = np.exp(log_probs)
    np.put_along_axis(dlogits, safe, np.take_along_axis(dlogits, safe, -1) - 1, -1)
    dlogits *= kept[..., None]
    return dlogits * (dloss / int(kept.sum()))  # a Python number: the dtype stays the logits'
