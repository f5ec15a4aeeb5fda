# %% [markdown]
# # Lesson 16: backward through the whole GPT
#
# Each layer of lucidlm.scratch has a hand-written `*_backward` (lessons 8 and 15). Chained in reverse order
# they give the gradient of the loss with respect to every parameter. Two checks show they are right:
#
# 1. **Finite differences** on single layers: nudge an input by $\pm h$, watch the output.
# 2. **PyTorch autograd** on the whole model: the same weights in `lucidlm.model.GPT`, whose gradients PyTorch
#    derives by itself, must give the same numbers, to about $10^{-12}$ in float64.

# %%
import numpy as np
import torch

from lucidlm.model import GPTConfig
from lucidlm.scratch import NumpyGPT, to_torch
from lucidlm.scratch import layers as L
from lucidlm.scratch.gradcheck import check_layer, relative_error

rng = np.random.default_rng(0)
for name, forward, backward, inputs in [
    (
        "layernorm",
        L.layernorm_forward,
        L.layernorm_backward,
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

reference = to_torch(model)  # same weights, float64
torch_loss = reference(torch.from_numpy(x), torch.from_numpy(y))[1]
torch_loss.backward()
worst = 0.0
for name, parameter in reference.named_parameters():
    worst = max(worst, relative_error(grads[name], parameter.grad.numpy()))
print(f"loss: NumPy {loss:.12f}, PyTorch {torch_loss.item():.12f}")
print(f"largest relative gradient difference over {len(grads)} parameters: {worst:.1e}")
assert abs(loss - torch_loss.item()) < 1e-12 and worst < 1e-8
print("lesson 16 ok: the hand-written backward pass equals PyTorch autograd")
