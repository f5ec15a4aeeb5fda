"""Choosing the next token in NumPy: temperature, top-k and top-p, as lucidlm.decode does it in PyTorch (the
tests hold the two to the same tokens), for the NumPy GPT and the lessons that run in the page."""

from __future__ import annotations

import numpy as np


def filter_logits(
    logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> np.ndarray:
    """Scale logits (V,) by temperature and set those that top-k / top-p exclude to -inf.

    The largest logit is subtracted before dividing, so that a tiny temperature leaves 0 for the most likely
    token and -inf for the rest instead of overflowing."""
    logits = (logits - logits.max()) / temperature
    if top_k is not None and top_k < logits.size:
        logits = np.where(logits < np.sort(logits)[-top_k], -np.inf, logits)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        probabilities = np.exp(logits[order] - logits[order][0])
        probabilities /= probabilities.sum()
        # Drop a token when the tokens before it already reach p; the most likely token always stays.
        drop = np.cumsum(probabilities) - probabilities >= top_p
        drop[0] = False
        logits = logits.copy()
        logits[order[drop]] = -np.inf
    return logits


def sample_next(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> int:
    """One token id from logits (V,): greedy at temperature 0, else the first token whose cumulative
    probability exceeds a uniform draw (one random number per token, as lucidlm.decode.sample_next)."""
    if temperature == 0:
        return int(np.argmax(logits))
    filtered = filter_logits(logits.astype(np.float64), temperature, top_k, top_p)
    probabilities = np.exp(filtered - filtered.max())
    cumulative = np.cumsum(probabilities)
    return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
