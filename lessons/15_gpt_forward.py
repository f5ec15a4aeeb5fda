# %% [markdown]
# # Lesson 15: the transformer block and a whole GPT forward pass
#
# Everything so far, assembled. A GPT turns token ids $(B, T)$ into next-token logits $(B, T, V)$:
#
# 1. token embedding + position embedding: $x_0 = E[\text{ids}] + P[0..T)$, shape $(B, T, C)$
# 2. $L$ blocks, each $x \leftarrow x + \mathrm{attn}(\mathrm{LN}_1(x))$ then $x \leftarrow x + \mathrm{mlp}(\mathrm{LN}_2(x))$,
#    where attn is causal multi-head attention (lessons 11-13) and mlp is $\mathrm{GELU}(x W_{fc}) W_{proj}$
#    with a hidden width of $4C$
# 3. a final layer norm, then the logits $x E^\top$: the output head reuses the token embedding (tied weights).
#
# Below, lucidlm.scratch's NumPy GPT runs and we recompute its forward pass step by step from its parameters.

# %%
import numpy as np

from lucidlm.model import GPTConfig
from lucidlm.scratch import NumpyGPT
from lucidlm.scratch import layers as L

config = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32)
model = NumpyGPT(config, dtype=np.float64, seed=0)
p = model.params
ids = np.random.default_rng(0).integers(0, 65, (2, 16))
B, T = ids.shape
C, H, D = config.n_embd, config.n_head, config.head_dim


def block_forward(x: np.ndarray, p: dict, name: str, n_head: int) -> np.ndarray:
    """One GPT-2 block without biases, pre-norm: x + attention(ln_1(x)), then that + mlp(ln_2(that)).
    x (B, T, C); p the model's parameters by name (weights stored (out, in): a layer computes h @ W.T); name
    the block's prefix, "transformer.h.0."; causal attention with n_head heads, a GELU MLP. -> (B, T, C)."""
    ### BEGIN SOLUTION
    B, T, C = x.shape
    H, D = n_head, C // n_head
    h, _ = L.layernorm_forward(x, p[name + "ln_1.weight"], None)
    q, k, v = np.split(h @ p[name + "attn.c_attn.weight"].T, 3, axis=-1)  # (B, T, C) each
    q, k, v = (t.reshape(B, T, H, D).transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, H, T, D)
    y, _ = L.attention_forward(q, k, v)
    y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
    x = x + y @ p[name + "attn.c_proj.weight"].T
    h, _ = L.layernorm_forward(x, p[name + "ln_2.weight"], None)
    h, _ = L.gelu_forward(h @ p[name + "mlp.c_fc.weight"].T)  # (B, T, 4C)
    return x + h @ p[name + "mlp.c_proj.weight"].T
    ### END SOLUTION


x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][:T]
print("embeddings:", x.shape)
for layer in range(config.n_layer):
    x = block_forward(x, p, f"transformer.h.{layer}.", H)
    print(f"after block {layer}:", x.shape)
x, _ = L.layernorm_forward(x, p["transformer.ln_f.weight"], None)
logits = x @ p["transformer.wte.weight"].T  # the tied head
print("logits:", logits.shape)

reference, _ = model.forward(ids)
assert np.allclose(logits, reference)

# %% [markdown]
# ## Counting parameters
# Per block: attention has $W_{qkv}$ ($C \times 3C$) and $W_{proj}$ ($C \times C$), the MLP $C \times 4C$ and
# $4C \times C$: $12C^2$, plus $2C$ for the two norm gains. With the embeddings $V C$ (shared with the head), the
# positions $T_{max} C$ and the final norm $C$:
# $$N = L(12C^2 + 2C) + VC + T_{max}C + C .$$

# %%
L_, V = config.n_layer, config.vocab_size
formula = L_ * (12 * C * C + 2 * C) + V * C + config.block_size * C + C
counted = sum(value.size for value in p.values())
print(f"parameters: {counted:,} (formula {formula:,})")
assert counted == formula
probabilities = np.exp(reference[0, -1] - reference[0, -1].max())
probabilities /= probabilities.sum()
print(
    f"an untrained model is unsure: the most likely next token has probability {probabilities.max():.3f}"
    f" (uniform would be {1 / V:.3f})"
)
print("lesson 15 ok: embeddings, blocks of attention and MLP with residuals and norms, a tied head")
