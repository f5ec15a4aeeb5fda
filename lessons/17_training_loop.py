# %% [markdown]
# # Lesson 17: the training loop
#
# Training repeats four steps: take a batch of windows from the text, run the model forward to get the loss,
# run it backward to get the gradients, and let the optimizer (AdamW) move every parameter a little against
# its gradient. Here the same small GPT trains twice on the same batches: once in NumPy (lucidlm.scratch, our
# hand-written backward pass) and once in PyTorch (autograd). Starting from the same weights, the two loss
# curves coincide; the picture is saved as `lesson17_loss.png`.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from lucidlm.model import GPTConfig
from lucidlm.scratch import AdamW, NumpyGPT, to_torch

text = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n" * 30
vocabulary = sorted(set(text))
data = np.array([vocabulary.index(ch) for ch in text])
config = GPTConfig(vocab_size=len(vocabulary), block_size=32, n_layer=2, n_head=2, n_embd=32)
numpy_model = NumpyGPT(config, seed=0)
torch_model = to_torch(numpy_model).train()
numpy_optimizer = AdamW(numpy_model.params, lr=3e-3, betas=(0.9, 0.99), weight_decay=0.0)
torch_optimizer = torch.optim.AdamW(torch_model.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.0)
rng = np.random.default_rng(0)
numpy_losses, torch_losses = [], []
for step in range(150):
    starts = rng.integers(0, len(data) - 33, 8)  # 8 random windows of 32 + 1 characters
    x = np.stack([data[s : s + 32] for s in starts])
    y = np.stack([data[s + 1 : s + 33] for s in starts])  # the targets: the same windows shifted by one

    _, loss = numpy_model.forward(x, y)  # NumPy: forward, backward by hand, AdamW
    numpy_optimizer.step(numpy_model.backward())
    numpy_losses.append(loss)

    torch_optimizer.zero_grad()  # PyTorch: forward, autograd, AdamW
    torch_loss = torch_model(torch.from_numpy(x), torch.from_numpy(y))[1]
    torch_loss.backward()
    torch_optimizer.step()
    torch_losses.append(torch_loss.item())
    if step % 50 == 0 or step == 149:
        print(f"step {step:3}: NumPy loss {loss:.4f}  PyTorch loss {torch_losses[-1]:.4f}")

assert numpy_losses[-1] < 0.5 * numpy_losses[0]
assert max(abs(a - b) for a, b in zip(numpy_losses, torch_losses, strict=True)) < 1e-3  # float32 rounding only

figure, axis = plt.subplots(figsize=(6, 3.5))
axis.plot(numpy_losses, label="NumPy (hand-written backward)", linewidth=3, alpha=0.6)
axis.plot(torch_losses, "--", label="PyTorch (autograd)")
axis.set_xlabel("step")
axis.set_ylabel("training loss (nats/token)")
axis.legend()
figure.tight_layout()
figure.savefig(Path("lesson17_loss.png"))
print("saved lesson17_loss.png")
print("lesson 17 ok: the same training loop in NumPy and PyTorch gives the same loss curve")
