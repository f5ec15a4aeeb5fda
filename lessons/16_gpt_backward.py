# %% [markdown]
# # Lesson 16: backward through the whole GPT
#
# Each layer of lucidlm.scratch has a hand-written `*_backward` (lessons 8 and 15). Chained in reverse order
# they give the gradient of the loss with respect to every parameter. Two checks show they are right:
#
# 1. **Finite differences** on single layers: nudge an input by $\pm h$, watch the output.
# 2. **Finite differences on the whole model**: nudge single weights anywhere in the GPT and compare the change
#    in the loss with what the gradient predicts, in float64.
#
# A third check lives in the tests (tests/scratch and tests/lessons): the same weights in PyTorch's
# `lucidlm.model.GPT`, whose gradients autograd derives by itself, give the same gradients to about $10^{-8}$.

# %%
import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import NumpyGPT
from lucidlm.scratch import layers as L
from lucidlm.scratch.gradcheck import check_layer


def layernorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The gradients of out = normalized * weight (+ bias), normalized = (x - mean) * rstd, given dout (..., C)
    and the cache of L.layernorm_forward: (normalized, rstd, weight, has_bias). Returns (dx, dweight, dbias),
    dbias None without a bias. The mean and the variance depend on every channel, so dx has two corrections."""
    ### BEGIN SOLUTION
    normalized, rstd, weight, has_bias = cache
    flat = dout.reshape(-1, dout.shape[-1])
    dweight = (flat * normalized.reshape(flat.shape)).sum(axis=0)
    dbias = flat.sum(axis=0) if has_bias else None
    dnormalized = dout * weight
    dx = rstd * (
        dnormalized
        - dnormalized.mean(axis=-1, keepdims=True)
        - normalized * (dnormalized * normalized).mean(axis=-1, keepdims=True)
    )
    return dx, dweight, dbias
    ### END SOLUTION


rng = np.random.default_rng(0)
for name, forward, backward, inputs in [
    (
        "layernorm",
        L.layernorm_forward,
        layernorm_backward,
        (rng.normal(size=(2, 3, 8)), rng.normal(size=8), rng.normal(size=8)),
    ),
    ("gelu", L.gelu_forward, L.gelu_backward, (rng.normal(size=(4, 6)),)),
    ("attention", L.attention_forward, L.attention_backward, tuple(rng.normal(size=(1, 2, 5, 4)) for _ in range(3))),
]:
    errors = check_layer(forward, backward, *inputs)
    print(f"{name:9}: finite-difference relative errors {[f'{e:.1e}' for e in errors]}")
    assert max(errors) < 1e-6

# %%
config = GPTConfig(vocab_size=30, block_size=8, n_layer=2, n_head=2, n_embd=16)
model = NumpyGPT(config, dtype=np.float64, seed=1)
x, y = rng.integers(0, 30, (4, 8)), rng.integers(0, 30, (4, 8))
_, loss = model.forward(x, y)
grads = model.backward()

h = 1e-6
worst = 0.0
for name in [
    "transformer.wte.weight",
    "transformer.h.0.attn.c_attn.weight",
    "transformer.h.1.mlp.c_proj.weight",
    "transformer.h.1.ln_1.weight",
    "transformer.ln_f.weight",
]:
    parameter = model.params[name]
    for index in [tuple(rng.integers(0, n) for n in parameter.shape) for _ in range(3)]:
        kept = parameter[index]
        parameter[index] = kept + h
        up = model.forward(x, y)[1]
        parameter[index] = kept - h
        down = model.forward(x, y)[1]
        parameter[index] = kept
        numerical = (up - down) / (2 * h)
        worst = max(worst, abs(numerical - grads[name][index]) / max(abs(numerical), abs(grads[name][index]), 1e-4))
print(f"loss {loss:.6f}; 15 weights in 5 parameters: largest relative difference from finite differences {worst:.1e}")
assert worst < 1e-5
print("lesson 16 ok: the hand-written backward pass equals finite differences, layer by layer and whole")
