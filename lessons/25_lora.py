# %% [markdown]
# # Lesson 25: LoRA, fine-tuning through a low-rank update
#
# Fine-tuning every weight of a large model needs memory for every weight's gradient and optimizer state.
# LoRA (Hu et al., 2021) freezes the model and learns, for a chosen layer with weight $W$ (out, in), two thin
# matrices $A$ ($r \times$ in) and $B$ (out $\times r$), so that the layer computes
#
# $$y = x W^\top + \frac{\alpha}{r}\, (x A^\top) B^\top = x \Big(W + \frac{\alpha}{r} B A\Big)^\top$$
#
# The update $\Delta W = \frac{\alpha}{r} B A$ has rank at most $r$, and its $r(\text{in} + \text{out})$ numbers
# are few beside $W$'s in $\times$ out. $B$ starts at zero, so training starts from the model exactly. When
# training is done, $\Delta W$ is added into $W$ ("merged"): the layer is an ordinary linear layer again, as
# fast as before, with the same outputs as the adapters gave. Below, all of it is checked on the NumPy GPT:
# since the layer's output is that of the weight $W + \frac{\alpha}{r} BA$, its gradient $G$ with respect to
# that weight gives the adapters' by the chain rule, $\frac{\alpha}{r} B^\top G$ for $A$ and
# $\frac{\alpha}{r} G A^\top$ for $B$. (`lucidlm train --set lora_rank=8` trains the same adapters in PyTorch,
# as `lucidlm.model.lora.LoRALinear`; the tests hold the two to the same outputs.)

# %%
import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import AdamW, NumpyGPT

config = GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=64)
model = NumpyGPT(config, seed=0)
rng = np.random.default_rng(0)
x = rng.integers(0, 40, (4, 32))
base_logits = model.forward(x)[0]

rank, alpha = 4, 8.0
scale = alpha / rank
targets = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
frozen = {name: weight.copy() for name, weight in model.params.items()}  # W, as it was
adapters = {}  # "layer's weight name" -> (A, B): A small and random, B zero
for name, weight in frozen.items():
    if name.endswith(".weight") and any(f".{target}." in name for target in targets):
        out_features, in_features = weight.shape
        adapters[name] = [rng.normal(0, 1 / np.sqrt(in_features), (rank, in_features)).astype(np.float32),
                          np.zeros((out_features, rank), np.float32)]  # fmt: skip


def lora_weight(W: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float) -> np.ndarray:
    """The adapted weight W + (alpha / r) B A: W (out, in), A (r, in), B (out, r), the rank r = A.shape[0].
    -> (out, in)."""
    ### BEGIN SOLUTION
    return W + (alpha / A.shape[0]) * B @ A
    ### END SOLUTION


def use_adapters() -> None:
    """Each adapted layer's weight becomes W + (alpha / r) B A: the model then computes the adapters' outputs."""
    for name, (A, B) in adapters.items():
        model.params[name] = lora_weight(frozen[name], A, B, alpha)


learned = sum(A.size + B.size for A, B in adapters.values())
total = sum(w.size for w in frozen.values()) + learned
print(f"{learned:,} of {total:,} numbers train ({learned / total:.1%}): adapters on {len(adapters)} layers")
A, B = adapters["transformer.h.0.mlp.c_fc.weight"]
assert A.shape == (rank, 64) and B.shape == (256, rank)
use_adapters()
assert np.array_equal(model.forward(x)[0], base_logits)  # B = 0: the adapters change nothing yet

# %% [markdown]
# ## Training moves only the adapters
# A few steps of AdamW on a made-up target, on the adapters alone. The frozen weights stay bit for bit as they
# were; the update each adapted layer has learned is of rank $r$ at most (its singular values past the $r$-th
# are zero, up to rounding).

# %%
trainable = {f"{name}.A": pair[0] for name, pair in adapters.items()} | {
    f"{name}.B": pair[1] for name, pair in adapters.items()
}
optimizer = AdamW(trainable, lr=1e-2)
y = rng.integers(0, 40, (4, 32))
for _ in range(30):
    use_adapters()
    _, loss = model.forward(x, y)
    gradients = model.backward()
    optimizer.step(  # the chain rule from the weight's gradient G to A and B
        {f"{name}.A": scale * B.T @ gradients[name] for name, (A, B) in adapters.items()}
        | {f"{name}.B": scale * gradients[name] @ A.T for name, (A, B) in adapters.items()}
    )
print(f"loss after 30 steps: {loss:.3f}")
assert all(np.array_equal(frozen[name], model.params[name]) for name in frozen if name not in adapters)
A, B = adapters["transformer.h.0.mlp.c_fc.weight"]
update = scale * B @ A  # what training added to W
singular_values = np.linalg.svd(update.astype(np.float64), compute_uv=False)
print(f"the update's singular values: {[round(float(s), 4) for s in singular_values[:6]]} ...")
assert singular_values[rank - 1] > 1e-3 and singular_values[rank] < 1e-5 * singular_values[0]

# %% [markdown]
# ## Merged, the same model
# Folding $\frac{\alpha}{r} B A$ into each $W$ leaves plain linear layers whose outputs are the adapters'
# two paths, $x W^\top + \frac{\alpha}{r} (x A^\top) B^\top$, to float rounding, in every adapted layer: this
# is how `lucidlm generate`, `serve` and `export` run a LoRA run. And the merged model is not the base model.

# %%
use_adapters()  # the merged weights
difference = 0.0
for name, (A, B) in adapters.items():
    h = rng.normal(size=(8, A.shape[1])).astype(np.float32)
    two_paths = h @ frozen[name].T + scale * (h @ A.T) @ B.T
    difference = max(difference, float(np.abs(h @ model.params[name].T - two_paths).max()))
print(f"largest difference between the adapters' two paths and the merged layers: {difference:.2e}")
assert difference < 1e-4
merged_logits = model.forward(x)[0]
assert not np.allclose(merged_logits, base_logits, atol=1e-3)  # the update is there
print("lesson 25 ok: a rank-r update, frozen base, and the merged model gives the adapters' outputs")
