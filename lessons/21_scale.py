# %% [markdown]
# # Lesson 21: scale
#
# **Parameters.** A GPT with $L$ layers of width $C$ has about $12 L C^2$ parameters in its blocks (lesson 15).
#
# **FLOPs per token.** A forward pass does one multiply and one add per parameter per token, $2N$; the backward
# pass does twice that, so training costs about $6N$ FLOPs per token, plus attention, $12 L H Q T$ with $H$ heads
# of size $Q$ over a context of $T$ (nanoGPT's formula).
#
# **Memory.** Training in fp32 with AdamW keeps, per parameter, the weight, its gradient and two moments:
# 16 bytes. Activations come on top and grow with batch and context.
#
# **MFU** (model FLOPs utilisation) = achieved FLOPs / the hardware's peak: how much of the machine the training
# really uses. Below, it is measured for the NumPy GPT wherever this runs (in the page, NumPy in WebAssembly on
# one core; `lucidlm train` reports the PyTorch trainer's MFU as it goes).

# %%
import time

import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.run_config import PRESETS, resolve_config
from lucidlm.scaling_law import ScalingLaw, effective_tokens
from lucidlm.scratch import AdamW, NumpyGPT


def parameters(c: GPTConfig) -> int:
    """GPT-2's parameters, counted from its shapes: the token and position tables, then per block two norms
    (gain and bias), the attention's (C, 3C) and (C, C) matrices and the MLP's (C, 4C) and (4C, C), with their
    biases; the final norm; the head is the token table (tied)."""
    ### BEGIN SOLUTION
    C, hidden = c.n_embd, c.mlp_hidden
    block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * hidden + hidden) + (hidden * C + C)
    return c.vocab_size * C + c.block_size * C + c.n_layer * block + 2 * C
    ### END SOLUTION


c = resolve_config("gpt2-small", overrides=["vocab_size=50257"]).model
n = parameters(c)
print(f"gpt2-small: {n:,} parameters ({n / 1e6:.0f}M)")
assert n == 124_439_808  # GPT-2 small, as published (the tests count lucidlm's GPT too)
in_blocks = n - c.vocab_size * c.n_embd - c.block_size * c.n_embd
assert abs(12 * c.n_layer * c.n_embd**2 / in_blocks - 1) < 0.01  # the blocks: 12 L C^2, to 1%
print(f"the blocks hold {in_blocks / n:.0%}, the embeddings the rest")
memory = 16 * n / 2**30
print(f"fp32 weights + gradients + AdamW moments: {memory:.2f} GiB before activations")

# %%
config = GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=2, n_embd=64)
model = NumpyGPT(config, seed=0)
optimizer = AdamW(model.params, lr=1e-3)
flops_per_token = 6 * model.num_params() + 12 * config.n_layer * config.n_head * config.head_dim * config.block_size
x = np.random.default_rng(0).integers(0, 65, (4, 64))


def train_step() -> None:
    model.forward(x, x)
    optimizer.step(model.backward())


a, b = (np.random.default_rng(1).normal(size=(256, 256)).astype(np.float32) for _ in range(2))
for _ in range(2):
    train_step()
    a @ b
started = time.perf_counter()
for _ in range(5):
    train_step()
tokens_per_second = 5 * x.size / (time.perf_counter() - started)
started = time.perf_counter()
for _ in range(20):
    a @ b
peak = 20 * 2 * 256**3 / (time.perf_counter() - started)
mfu = flops_per_token * tokens_per_second / peak
print(f"2 x 64 NumPy GPT: {flops_per_token / 1e6:.2f} MFLOPs per token, {tokens_per_second:,.0f} tokens/s")
print(f"fp32 matmul peak here (256 x 256): {peak / 1e9:.1f} GFLOP/s -> MFU {mfu:.0%}")
assert 0.01 < mfu < 1.0  # small matrices and NumPy's many passes leave most of the machine idle

# %% [markdown]
# ## On GPUs, and on many
# A GPU runs the same code with `--device cuda`: lucidlm then trains in bf16 autocast (matrix products in
# bfloat16, reductions in fp32), and `--compile` fuses the small element-wise kernels. An H100 peaks near
# $10^{15}$ bf16 FLOP/s, so at 40% MFU gpt2-small's $6N \approx 0.75$ GFLOP per token would train at about
# half a million tokens per second. Beyond one GPU, `torchrun --nproc_per_node=8 -m lucidlm train ...` starts one
# process per GPU; each draws its own batches and DistributedDataParallel averages the gradients, so 8 GPUs
# train like one GPU with 8 times the batch (the README shows the multi-node form).

# %%
h100_bf16_peak = 989e12
per_token = 6 * 124e6
rate = 0.4 * h100_bf16_peak / per_token
print(f"gpt2-small on one H100 at 40% MFU: about {rate:,.0f} tokens/s")
assert 4e5 < rate < 6e5 and "gpt2-small" in PRESETS

# %% [markdown]
# ## Scaling laws: how much model for how much compute
# Hoffmann et al. (2022) found that the loss of a model of $N$ parameters trained on $D$ tokens follows
#
# $$L(N, D) = E + \frac{A}{N^\alpha} + \frac{B}{D^\beta}:$$
#
# the text's own entropy $E$, what a finite model cannot represent, and what finite training has not taught yet.
# A budget of $C \approx 6ND$ FLOPs buys a larger model on fewer tokens or a smaller one on more; the law says
# which loses least. `lucidlm scale` trains a grid of short runs and fits the law to them. The runs below are
# the ones it trained on Tiny Shakespeare (char tokens, the `shakespeare-char` layout; docs/benchmarks.md),
# with one run left out of the fit to see how well the law predicts what it has not seen.
#
# The fit: for given $E$, $\alpha$ and $\beta$ the law is linear in $A$ and $B$, so least squares gives them at
# once; a search over $(E, \alpha, \beta)$, coarse then fine, keeps the law whose log-loss is closest to the
# runs'. (`lucidlm scale` minimises a Huber loss with L-BFGS instead; the tests hold the two fits to the same
# predictions, and to the law `train/recipe.py` sizes runs with.)


# %%
def fit_law(points: list[tuple[float, float, float]]) -> ScalingLaw:
    """E + A / N^alpha + B / D^beta through points (N, D, loss): least squares for A and B at each
    (E, alpha, beta) of a grid, around the best point of the last grid, three times finer each round."""
    n, d, loss = (np.array(column, dtype=np.float64) for column in zip(*points, strict=True))
    centre, width, best = np.array([1.0, 0.5, 0.5]), np.array([1.0, 0.45, 0.45]), (np.inf, None)
    for _ in range(4):
        grids = [np.linspace(c - w, c + w, 15) for c, w in zip(centre, width, strict=True)]
        for alpha in grids[1]:
            for beta in grids[2]:
                if alpha <= 0 or beta <= 0:
                    continue
                x = np.stack([n**-alpha, d**-beta], axis=1)  # (runs, 2)
                solve = np.linalg.pinv(x)  # A, B = solve @ (loss - E), for every E at once
                e = grids[0][grids[0] > 0][:, None]  # (Es, 1)
                ab = (solve @ (loss[None, :] - e).T).T  # (Es, 2)
                predicted = e + ab @ x.T  # (Es, runs)
                valid = (ab > 0).all(axis=1) & (predicted > 0).all(axis=1)
                error = np.where(
                    valid, ((np.log(np.where(predicted > 0, predicted, 1)) - np.log(loss)) ** 2).sum(1), np.inf
                )
                i = int(error.argmin())
                if error[i] < best[0]:
                    best = (error[i], (float(e[i, 0]), float(ab[i, 0]), float(alpha), float(ab[i, 1]), float(beta)))
        centre, width = np.array([best[1][0], best[1][2], best[1][4]]), width / 3
    E, A, alpha, B, beta = best[1]
    return ScalingLaw(E, A, alpha, B, beta)


UNIQUE = 1_003_854  # Tiny Shakespeare's training tokens: a run past them reads them again
runs = [  # (depth, parameters, training tokens, whole-split val loss), from `lucidlm scale`
    (2, 115392, 301056, 2.2626),
    (2, 115392, 1201152, 1.8097),
    (3, 345504, 301056, 2.1134),
    (3, 345504, 1201152, 1.6824),
    (3, 345504, 3001344, 1.5566),
    (4, 821120, 301056, 2.0986),
    (4, 821120, 1201152, 1.6178),
    (4, 821120, 3001344, 1.5041),
    (6, 2682432, 301056, 2.0281),
    (6, 2682432, 1201152, 1.5529),
]
left_out = (5, 1610560, 1999872, 1.5203)
law = fit_law([(n, effective_tokens(d, UNIQUE), loss) for _, n, d, loss in runs])
print(f"L(N, D) = {law.E:.3f} + {law.A:.1f} / N^{law.alpha:.3f} + {law.B:.0f} / D^{law.beta:.3f}")
_, n, d, measured = left_out
predicted = law.loss(n, effective_tokens(d, UNIQUE))
print(f"left out: depth 5 on {d:,} tokens: predicted {predicted:.4f}, measured {measured:.4f}")
assert abs(predicted - measured) < 0.03

# %% [markdown]
# For one budget, the best size is the bottom of its isoFLOP curve: every $N$ with $D = C / 6N$. A run that
# has twice the compute should grow both: Chinchilla's answer was about as much in $N$ as in $D$.

# %%
sizes = [10**5 * 1.1**i for i in range(60)]


def best_size(compute: float) -> float:
    return min(sizes, key=lambda size: law.loss(size, compute / (6 * size)))


for compute in (1e13, 4e13, 1.6e14):
    size = best_size(compute)
    print(f"C = {compute:.1e} FLOPs: best N = {size:,.0f} parameters on D = {compute / (6 * size):,.0f} tokens")
assert best_size(1e13) < best_size(4e13) < best_size(1.6e14)  # more compute: a larger model
print("lesson 21 ok: parameters, FLOPs per token, memory and MFU, counted; a scaling law fitted and tested")
