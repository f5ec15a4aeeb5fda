# %% [markdown]
# # Lesson 19: the KV cache
#
# Generating token $t + 1$ needs the model's output at position $t$, which depends on the keys and values of
# positions $1 \dots t$. Those do not change when a new token is appended (the causal mask, lesson 12), so
# recomputing them every step is waste. A **KV cache** stores each layer's keys and values; each new step runs
# only the newest token through the model and attends over the stored ones.
#
# Work for $n$ new tokens after a prompt of $p$, with $N$ parameters: without a cache step $t$ processes all
# $t$ tokens, about $2N \cdot t$ FLOPs, $\sum_t 2Nt \approx N (p + n)^2$ in all; with the cache each step costs about
# $2N$ plus attention over $t$ cached positions, $\approx 2Nn$ in all. Below, the NumPy GPT decodes both ways,
# and we count the FLOPs of every forward pass it makes (`lucidlm generate` decodes with a cache in PyTorch).

# %%
import time

import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import KVCache, NumpyGPT
from lucidlm.scratch.layers import attention_forward

config = GPTConfig(vocab_size=65, block_size=256, n_layer=4, n_head=4, n_embd=128)
model = NumpyGPT(config, seed=0)
prompt, new = list(range(8)), 120
# the weights of the matrix products: every matrix but the position table, which is only looked up
matrices = sum(p.size for name, p in model.params.items() if p.ndim == 2 and "wpe" not in name)


def forward_flops(positions: int, attended: int) -> int:
    """A forward pass over `positions` new tokens that attend over `attended` positions: each weight matrix is
    one multiply and one add per position (the head too: it is the token embedding), and attention's two
    products, q k^T and weights @ v, are 2 * attended * n_embd each per position and layer."""
    return 2 * matrices * positions + 4 * config.n_layer * positions * attended * config.n_embd


def without_cache() -> tuple[list[int], int]:
    tokens, flops = list(prompt), 0
    for _ in range(new):
        logits, _ = model.forward(np.array([tokens]))  # the whole sequence, every step
        flops += forward_flops(len(tokens), len(tokens))
        tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :], flops


def with_cache() -> tuple[list[int], int]:
    kv = KVCache()
    logits, _ = model.forward(np.array([prompt]), kv=kv)  # the prompt once
    tokens, flops = [int(logits[0, -1].argmax())], forward_flops(len(prompt), len(prompt))
    while len(tokens) < new:
        logits, _ = model.forward(np.array([tokens[-1:]]), kv=kv)  # then only the newest token
        flops += forward_flops(1, kv.length)
        tokens.append(int(logits[0, -1].argmax()))
    return tokens, flops


counts = {}
for name, decode in (("without cache", without_cache), ("with KV cache", with_cache)):
    started = time.perf_counter()
    tokens, flops = decode()
    counts[name] = (flops, tokens)
    print(f"{name:14}: {flops / 1e9:6.3f} GFLOPs for {new} tokens, {time.perf_counter() - started:.2f} s here")
(slow_flops, slow_tokens), (fast_flops, fast_tokens) = counts["without cache"], counts["with KV cache"]
assert slow_tokens == fast_tokens  # the same text
assert slow_tokens == model.generate(prompt, new, temperature=0)  # NumpyGPT.generate decodes with the cache
print(f"same tokens: {slow_tokens == fast_tokens}; the cache does {slow_flops / fast_flops:.1f}x less work")
assert slow_flops > 10 * fast_flops


# %% [markdown]
# ## One step of the cache, by hand
# At the newest position the query attends over every key so far, and there is nothing after it to mask: a
# decoding step appends the new key and value to the cache and takes one softmax over the cached scores.
# Stepping through a sequence this way gives, row for row, the outputs of causal attention over it at once.

# %%


def cached_attention_step(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, keys: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The newest position's attention: its query q (d,), key k (d,) and value v (d,), and the cache of the
    positions before it, keys and values (S, d) each (S may be 0). Returns its output (d,) and the cache with
    its key and value appended, (S + 1, d) each."""
    ### BEGIN SOLUTION
    keys, values = np.vstack([keys, k]), np.vstack([values, v])
    scores = keys @ q / np.sqrt(len(q))  # (S + 1,): it sees every cached position and itself
    weights = np.exp(scores - scores.max())
    return weights / weights.sum() @ values, keys, values
    ### END SOLUTION


rng = np.random.default_rng(0)
q, k, v = (rng.normal(size=(10, 16)) for _ in range(3))
keys, values, stepped = np.zeros((0, 16)), np.zeros((0, 16)), []
for t in range(10):
    out, keys, values = cached_attention_step(q[t], k[t], v[t], keys, values)
    stepped.append(out)
at_once, _ = attention_forward(q[None, None], k[None, None], v[None, None])
assert np.allclose(np.array(stepped), at_once[0, 0])
print(f"10 cached steps give causal attention's 10 rows; the cache holds {keys.shape[0]} keys")

# %% [markdown]
# The price is memory: for every layer and every position, a key and a value of $n_{kv} \cdot D$ numbers.
# Grouped-query attention (lesson 13) shrinks exactly this.

# %%
kv = KVCache()
model.forward(np.array([prompt]), kv=kv)
per_token = 2 * config.n_layer * config.n_kv_head * config.head_dim
assert kv.numel() == per_token * len(prompt)
print(f"cache: {per_token} numbers per token, {per_token * config.block_size * 4 / 1024:.0f} KiB for the whole window")
print("lesson 19 ok: same tokens, far fewer FLOPs")
