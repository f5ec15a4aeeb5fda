# %% [markdown]
# # Lesson 23: induction heads, found, removed and patched
#
# Show a language model "... Mr Dursley ... Mr" and it guesses "Dursley": it has learned to copy what followed
# an earlier occurrence of the current token. That is in-context learning at its simplest, and Olsson et al.
# (2022) found the circuit that does it, made of two attention heads in two layers:
#
# - a **previous-token head** in layer 0 writes into each position the token just before it;
# - an **induction head** in layer 1, at the current token $A$, looks for a position whose *previous* token was
#   $A$ (its key carries what the first head wrote there), attends to it and copies the token it finds, $B$.
#
# The second head's keys are built from the first head's output: the heads *compose*, which one layer alone
# cannot do. Here we make that circuit grow in the NumPy GPT, then find it by its attention, take it out, and
# patch it, through the model's hook points (the names TransformerLens uses). `lucidlm lens heads`, `ablate`
# and `patch` compute the same numbers on a PyTorch model; the tests hold the two to each other.
#
# The data hides nothing else. Each sequence is 32 random tokens from a vocabulary of $V = 64$, in which the
# first $n$ tokens (8 to 16, at random) repeat right after themselves. A random token carries no information,
# so the best a model can do on a first copy is $\ln V$ nats per token; on a repeat it can do far better, if it
# copies.
#
# The model has two layers of one head each and no MLPs (an MLP whose output projection is zero and frozen adds
# exactly nothing), like Olsson et al.'s attention-only toys. One head a layer leaves room for the textbook
# circuit only: in our runs with two heads a layer, training on this data found a shifted copy instead, one
# head six tokens back for the keys and one five back for the values (RoPE's fastest pair of channels turns by
# one radian a position, so six positions bring it almost full circle). The projections keep their biases: a
# query bias and a key bias, both turned by RoPE, make a head prefer one relative offset whatever the tokens,
# which is all a previous-token head is. (Without them, the circuit formed a little later in our runs, and in one
# run of three not within 700 steps.)
#
# For a few hundred steps the loss barely moves; then, within a few dozen, the repeat's loss falls: the two
# heads only help once both exist, and Olsson et al. saw the same sudden drop, the "phase change", in large
# models. The learning rate matters: at twice this one, the repeat's loss stalled near 3.4 nats in each of our
# runs.

# %%
import math
import time

import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import AdamW, NumpyGPT

V, T = 64, 32
rng = np.random.default_rng(1)


def repeated_tokens(rows: int, width: int, lengths: np.ndarray) -> np.ndarray:
    """(rows, width) random tokens; in row r, the first lengths[r] of them again right after themselves."""
    ids = rng.integers(0, V, (rows, width))
    for row, n in enumerate(lengths):
        ids[row, n : 2 * n] = ids[row, :n]
    return ids


config = GPTConfig(
    vocab_size=V, block_size=T, n_layer=2, n_head=1, n_embd=64, positions="rope", mlp_hidden=1, bias=True
)
model = NumpyGPT(config, seed=0)
for layer in range(config.n_layer):
    model.params[f"transformer.h.{layer}.mlp.c_proj.weight"][:] = 0  # attention-only: the MLP's output is zero ...
trained = {name: p for name, p in model.params.items() if ".mlp." not in name}  # ... and stays zero
optimizer = AdamW(trained, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0)
steps, batch_size = 500, 32
start = time.perf_counter()
for step in range(steps):
    batch = repeated_tokens(batch_size, T + 1, rng.integers(8, 17, batch_size))  # (32, 33)
    _, loss = model.forward(batch[:, :-1], batch[:, 1:])
    grads = model.backward()
    optimizer.step({name: grads[name] for name in trained})
    if (step + 1) % 50 == 0:
        print(f"step {step + 1}: loss {loss:.3f}", flush=True)
print(f"trained {steps} steps in {time.perf_counter() - start:.1f} s")

# %% [markdown]
# On 200 fresh sequences of 12 random tokens and their repeat, the loss per half: the first copy stays at
# $\ln V$ (or above it: a model that copies also bets, wrongly, on tokens it has seen), the repeat falls far
# below. (The repeat's first token is left out: nothing announces that the repeat begins.)

# %%
n = 12
test = repeated_tokens(200, 2 * n, np.full(200, n))  # (200, 24)


def loss_per_half(logits: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy of the first copy's predictions and of the repeat's (the first of it left out)."""
    shifted = logits[:, :-1] - logits[:, :-1].max(axis=-1, keepdims=True)  # (200, 23, V)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    losses = -np.take_along_axis(log_probs, test[:, 1:, None], axis=-1)[..., 0]  # (200, 23)
    return float(losses[:, : n - 1].mean()), float(losses[:, n:].mean())


first, repeat = loss_per_half(model.forward(test)[0])
print(f"first copy {first:.3f} nats, repeat {repeat:.3f} nats; ln V = {math.log(V):.3f}")
assert first > math.log(V) - 0.1  # random tokens stay unpredictable
assert repeat < 1.5  # the repeat is copied

# %% [markdown]
# Which head does the copying? Each head's attention pattern (`blocks.L.attn.hook_pattern`, (B, H, T, T)) on
# the test sequences says where it looks from the repeat's positions $i$: to $i - 1$ (the previous token), to
# $i - n$ (the same token's first copy), and to $i - n + 1$, the token that *followed* the first copy: the
# induction score. Each score is the mean attention to that place; `lucidlm lens heads` prints the same three.

# %%
_, cache = model.run_with_cache(test)
queries = np.arange(n, 2 * n)  # the repeat's positions


def mean_attention_at(pattern: np.ndarray, n: int, offset: int) -> float:
    """One head's pattern (B, 2n, 2n) over B sequences of n tokens and their repeat: the mean, over the sequences
    and the repeat's positions i (n <= i < 2n), of the attention from i to i - offset."""
    ### BEGIN SOLUTION
    queries = np.arange(n, 2 * n)
    return float(pattern[:, queries, queries - offset].mean())
    ### END SOLUTION


def mean_attention(layer: int, offset: int) -> float:
    return mean_attention_at(cache[f"blocks.{layer}.attn.hook_pattern"][:, 0], n, offset)  # head 0


scores = {
    kind: [mean_attention(layer, offset) for layer in range(config.n_layer)]
    for kind, offset in (("previous_token", 1), ("duplicate_token", n), ("induction", n - 1))
}
for layer in range(config.n_layer):
    print(
        f"head {layer}.0: previous-token {scores['previous_token'][layer]:.2f}, "
        f"duplicate-token {scores['duplicate_token'][layer]:.2f}, induction {scores['induction'][layer]:.2f}"
    )
induction, previous = scores["induction"], scores["previous_token"]
assert induction.index(max(induction)) == 1 and induction[1] > 0.7  # the induction head, in layer 1
assert previous.index(max(previous)) == 0 and previous[0] > 0.2  # the previous-token head, in layer 0

# %% [markdown]
# The induction head's attention, read off the same hook point: from each position of the repeat, the position
# it attends to most, and where the circuit says it should look.

# %%
looked_at = cache["blocks.1.attn.hook_pattern"][:, 0].argmax(-1)  # (200, 24) the most attended key per query
shown = queries[:-1]
print("query      " + " ".join(f"{i:3d}" for i in shown))
print("looks at   " + " ".join(f"{j:3d}" for j in looked_at[0, shown]))
print("i - n + 1  " + " ".join(f"{i:3d}" for i in shown - n + 1))
hits = float((looked_at[:, shown] == shown - n + 1).mean())
print(f"over all 200 sequences, it looks where the circuit says {hits:.0%} of the time")
assert hits > 0.8

# %% [markdown]
# Removing a head tells what it was for. Mean-ablation replaces a head's output (`blocks.L.attn.hook_z`,
# (B, T, H, D), before the output projection) at every position by its average over the batch and the
# positions: what the head adds on average stays, what it says about *this* token is gone. Without the
# induction head, the repeat reads as random again: its loss climbs back to $\ln V$. Without the previous-token
# head the induction head's keys lose what they match on, and the repeat's loss climbs too: the circuit needs
# both.


# %%
def without_head(layer: int) -> tuple[float, float]:
    name = f"blocks.{layer}.attn.hook_z"
    mean = cache[name].mean(axis=(0, 1), keepdims=True)  # (1, 1, H, D)
    return loss_per_half(model.run_with_hooks(test, {name: lambda z: np.broadcast_to(mean, z.shape)}))


for layer, role in ((1, "induction"), (0, "previous-token")):
    first_without, repeat_without = without_head(layer)
    print(f"without the {role} head {layer}.0: first copy {first_without:.3f}, repeat {repeat_without:.3f} nats")
    assert repeat_without > repeat + 2  # the copying is gone
    if role == "induction":
        assert abs(repeat_without - math.log(V)) < 0.3  # back to guessing

# %% [markdown]
# **Activation patching** asks *where* the answer's evidence lives. Take a clean prompt, 12 random tokens and
# the first 7 of them again, whose answer is the token that followed the 7th the first time. Corrupt it by
# changing one token of the first copy: the 7th itself, at position $k = 6$. Now the last token has no earlier
# twin and the model loses its answer. Then run the corrupted prompt with one activation of the clean run put
# back, the residual stream entering a layer (`blocks.L.hook_resid_pre`) at one position, and measure how much
# of the clean logit difference (the answer against the corrupted run's favourite) comes back: 1 is all of it,
# 0 none. One batch does every position at once: row $p$ of it is the corrupted prompt patched at position $p$.
#
# The circuit predicts the picture exactly. Entering layer 0, the evidence is the token at position $k$, so
# only position $k$ matters. Layer 0's previous-token head then copies it one position on, into $k + 1$: entering
# layer 1 it lives at $k + 1$ alone, where the induction head's key reads it. The last position never matters:
# its token is the same in both runs.

# %%
prompt = test[1, :n]
k = 6
clean = np.concatenate([prompt, prompt[: k + 1]])[None]  # (1, 19)
corrupted = clean.copy()
corrupted[0, k] = next(token for token in range(V) if token not in clean)  # a token the prompt never has
clean_logits, clean_cache = model.run_with_cache(clean)
corrupted_last = model.forward(corrupted)[0][0, -1]
answer = clean[0, k + 1]
wrong = next(token for token in np.argsort(-corrupted_last) if token != answer)
assert clean_logits[0, -1].argmax() == answer


def difference(logits: np.ndarray) -> np.ndarray:
    """The answer's logit minus the wrong token's, at the last position, for each row."""
    return logits[:, -1, answer] - logits[:, -1, wrong]


clean_difference, corrupted_difference = difference(clean_logits)[0], difference(corrupted_last[None, None])[0]
print(f"logit difference: clean {clean_difference:.2f}, corrupted {corrupted_difference:.2f}")
length = clean.shape[1]
positions = np.arange(length)


def patch_each_position(name: str):
    clean_value = clean_cache[name][0]  # (19, C)

    def hook(value: np.ndarray) -> np.ndarray:  # (19, 19, C): row p is patched at position p
        value = value.copy()
        value[positions, positions] = clean_value
        return value

    return hook


residual = []
for layer in range(config.n_layer):
    name = f"blocks.{layer}.hook_resid_pre"
    patched = model.run_with_hooks(np.repeat(corrupted, length, axis=0), {name: patch_each_position(name)})
    residual.append((difference(patched) - corrupted_difference) / (clean_difference - corrupted_difference))
shown = [*range(k - 2, k + 4), length - 1]  # around k, and the last position
print("position      " + " ".join(f"{p:5d}" for p in shown))
for layer, restored in enumerate(residual):
    print(f"into layer {layer}  " + " ".join(f"{restored[p]:5.2f}" for p in shown))
for layer, restored in enumerate(residual):
    where = k + layer  # k entering layer 0, k + 1 entering layer 1
    assert restored[where] > 0.9
    assert all(abs(value) < 0.15 for p, value in enumerate(restored) if p != where)

print(
    "lesson 23 ok: an induction head grew, was found by its score, and ablating or patching it did what the circuit says"
)
