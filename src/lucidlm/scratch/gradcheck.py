"""Finite-difference gradient checks, for any `*_forward` / `*_backward` pair of layers.py.

The analytic gradient of L = sum(forward(inputs) * dout) must equal the numerical one,
(L(x + h) - L(x - h)) / 2h, element by element. In float64 with h = 1e-6 the two agree to about 1e-9.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of x (changed in place, restored)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + h
        plus = f()
        x[index] = original - h
        minus = f()
        x[index] = original
        grad[index] = (plus - minus) / (2 * h)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(np.linalg.norm(a), np.linalg.norm(b), 1e-30)
    return float(np.linalg.norm(a - b) / scale)


def check_layer(forward: Callable, backward: Callable, *inputs: np.ndarray | None, seed: int = 0) -> list[float]:
    """Relative errors between the analytic and numerical gradients of each float input (integer inputs, such
    as token ids, are data and are skipped; None stands for an absent bias)."""
    out, cache = forward(*inputs)
    dout = np.random.default_rng(seed).normal(size=np.shape(out))
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    differentiable = [x for x in inputs if x is None or np.issubdtype(x.dtype, np.floating)]
    errors = []
    for x, analytic in zip(differentiable, grads, strict=True):
        if x is None:
            continue
        numeric = numerical_gradient(lambda: float(np.sum(forward(*inputs)[0] * dout)), x)
        errors.append(relative_error(analytic, numeric))
    return errors
