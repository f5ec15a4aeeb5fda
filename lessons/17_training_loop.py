# %% [markdown]
# # Lesson 17: the training loop
#
# Training repeats four steps: take a batch of windows from the text, run the model forward to get the loss,
# run it backward to get the gradients, and let the optimizer (AdamW) move every parameter a little against
# its gradient. Here a small GPT trains in NumPy (lucidlm.scratch: the hand-written backward pass of lesson 16
# and an AdamW written out in a dozen lines), and the loss curve is saved as `lesson17_loss.png`.
#
# The tests replay this very loop in PyTorch, autograd and `torch.optim.AdamW` from the same weights on the
# same batches, and the two loss curves coincide to float32 rounding (tests/lessons/test_lessons_against_pytorch.py).

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import NumpyGPT

text = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n" * 30
vocabulary = sorted(set(text))
data = np.array([vocabulary.index(ch) for ch in text])
config = GPTConfig(vocab_size=len(vocabulary), block_size=32, n_layer=2, n_head=2, n_embd=32)
model = NumpyGPT(config, seed=0)


def adamw_update(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step t (1 for the first) of AdamW for one parameter, as torch.optim.AdamW: the decoupled weight decay
    param * (1 - lr * weight_decay) first, then the moments m and v (averages of grad and grad^2) updated and
    bias-corrected, and param - lr * m_hat / (sqrt(v_hat) + eps). Returns new (param, m, v)."""
    ### BEGIN SOLUTION
    param = param * (1 - lr * weight_decay)
    m = betas[0] * m + (1 - betas[0]) * grad
    v = betas[1] * v + (1 - betas[1]) * grad * grad
    m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
    ### END SOLUTION


moments = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in model.params.items()}
rng = np.random.default_rng(0)
losses = []
for step in range(150):
    starts = rng.integers(0, len(data) - 33, 8)  # 8 random windows of 32 + 1 characters
    x = np.stack([data[s : s + 32] for s in starts])
    y = np.stack([data[s + 1 : s + 33] for s in starts])  # the targets: the same windows shifted by one

    _, loss = model.forward(x, y)  # forward: the loss
    gradients = model.backward()  # backward: its gradient for every parameter
    for name, gradient in gradients.items():  # AdamW moves each parameter against its gradient
        model.params[name], *moments[name] = adamw_update(
            model.params[name], gradient, *moments[name], t=step + 1, lr=3e-3, betas=(0.9, 0.99)
        )
    losses.append(loss)
    if step % 50 == 0 or step == 149:
        print(f"step {step:3}: loss {loss:.4f}")

assert losses[0] > 0.9 * np.log(len(vocabulary))  # at the start, about uniform over the vocabulary
assert np.mean(losses[-10:]) < 0.5 * losses[0]

figure, axis = plt.subplots(figsize=(6, 3.5))
axis.plot(losses, label="NumPy GPT, hand-written backward, AdamW")
axis.set_xlabel("step")
axis.set_ylabel("training loss (nats/token)")
axis.legend()
figure.tight_layout()
figure.savefig(Path("lesson17_loss.png"))
print("saved lesson17_loss.png")
print("lesson 17 ok: forward, backward, step: the loss falls by more than half in 150 steps")
