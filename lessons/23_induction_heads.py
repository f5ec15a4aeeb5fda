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
# cannot do. Here we make that circuit grow, then find it with `lucidlm.lens`, take it out, and patch it.
#
# The data hides nothing else. Each sequence is 64 random tokens from a vocabulary of $V = 64$, in which the
# first $n$ tokens (8 to 28, at random) repeat right after themselves. A random token carries no information,
# so the best a model can do on a first copy is $\ln V$ nats per token; on a repeat it can do far better, if it
# copies.
#
# The model has two layers of one head each and no MLPs (an MLP whose output projection is zero and frozen adds
# exactly nothing), like Olsson et al.'s attention-only toys. One head a layer leaves room for the textbook
# circuit only: in our runs with two heads a layer, training on this data found a shifted copy instead, one
# head six tokens back for the keys and one five back for the values (RoPE's fastest pair of channels turns by
# one radian a position, so six positions bring it almost full circle).

# %%
import math
import time

import torch
import torch.nn.functional as F

from lucidlm.lens import ablation, head_scores, patching, repeated_tokens
from lucidlm.model import GPT, GPTConfig

torch.manual_seed(0)
V, T = 64, 64
config = GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=1, n_embd=64, positions="rope", mlp_hidden=1)
model = GPT(config)
for block in model.transformer.h:
    block.mlp.c_proj.weight.data.zero_()  # attention-only: the MLP's output is zero ...
    block.mlp.requires_grad_(False)  # ... and stays zero
trained = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.98))
generator = torch.Generator().manual_seed(1)
start = time.perf_counter()
for _ in range(1000):
    lengths = torch.randint(8, 29, (32,), generator=generator).tolist()
    batch = repeated_tokens(V, T + 1, lengths, generator)  # (32, 65): n random tokens, again, then random
    loss = model(batch[:, :-1], batch[:, 1:])[1]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"trained 1000 steps in {time.perf_counter() - start:.1f} s: loss {loss.item():.3f}")
model.eval()

# %% [markdown]
# On 200 fresh sequences of 20 random tokens and their repeat, the loss per half: the first copy stays at
# $\ln V$ (or above it: a model that copies also bets, wrongly, on tokens it has seen), the repeat falls far
# below. (The repeat's first token is left out: nothing announces that the repeat begins.)

# %%
n = 20
test = repeated_tokens(V, 2 * n, [n] * 200, generator)  # (200, 40)


def loss_per_half(logits: torch.Tensor) -> tuple[float, float]:
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), test[:, 1:], reduction="none")  # (200, 39)
    return losses[:, : n - 1].mean().item(), losses[:, n:].mean().item()


with torch.no_grad():
    first, repeat = loss_per_half(model(test)[0])
print(f"first copy {first:.3f} nats, repeat {repeat:.3f} nats; ln V = {math.log(V):.3f}")
assert first > math.log(V) - 0.1  # random tokens stay unpredictable
assert repeat < 1.5  # the repeat is copied

# %% [markdown]
# Which head does the copying? `head_scores` (the same numbers as `lucidlm lens heads`) shows every head
# random tokens repeated once and measures where it attends from the repeat's positions $i$: to $i - 1$ (the
# previous token), to $i - n$ (the same token's first copy), and to $i - n + 1$, the token that *followed* the
# first copy: the induction score.

# %%
scores = head_scores(model, length=n, batch=16)
for layer in range(config.n_layer):
    print(
        f"head {layer}.0: previous-token {scores['previous_token'][layer][0]:.2f}, "
        f"duplicate-token {scores['duplicate_token'][layer][0]:.2f}, induction {scores['induction'][layer][0]:.2f}"
    )
induction = [row[0] for row in scores["induction"]]
previous = [row[0] for row in scores["previous_token"]]
assert induction.index(max(induction)) == 1 and induction[1] > 0.7  # the induction head, in layer 1
assert previous.index(max(previous)) == 0 and previous[0] > 0.2  # the previous-token head, in layer 0

# %% [markdown]
# The induction head's attention, read off its hook point: from each position of the repeat, the position it
# attends to most, and where the circuit says it should look.

# %%
with torch.no_grad():
    _, cache = model.run_with_cache(test, ["blocks.1.attn.hook_pattern"])
looked_at = cache["blocks.1.attn.hook_pattern"][:, 0].argmax(-1)  # (200, 40) the most attended key per query
queries = torch.arange(n, 2 * n - 1)
print("query      " + " ".join(f"{i:3d}" for i in queries.tolist()))
print("looks at   " + " ".join(f"{j:3d}" for j in looked_at[0, queries].tolist()))
print("i - n + 1  " + " ".join(f"{i:3d}" for i in (queries - n + 1).tolist()))
hits = (looked_at[:, queries] == queries - n + 1).float().mean().item()
print(f"over all 200 sequences, it looks where the circuit says {hits:.0%} of the time")
assert hits > 0.8

# %% [markdown]
# Removing a head tells what it was for. Mean-ablation replaces a head's output at every position by its
# average over the batch: what the head adds on average stays, what it says about *this* token is gone.
# Without the induction head, the repeat reads as random again: its loss climbs back to $\ln V$. Without the
# previous-token head the induction head's keys lose what they match on, and the repeat's loss climbs too: the
# circuit needs both.


# %%
def without_head(layer: int) -> tuple[float, float]:
    name = f"blocks.{layer}.attn.hook_z"  # (B, T, H, D) each head's output before the projection
    with torch.no_grad():
        _, cache = model.run_with_cache(test, [name])
        mean = cache[name].mean(dim=(0, 1), keepdim=True)
        return loss_per_half(model.run_with_hooks(test, {name: lambda z, _: mean.expand_as(z)}))


for layer, role in ((1, "induction"), (0, "previous-token")):
    first_without, repeat_without = without_head(layer)
    print(f"without the {role} head {layer}.0: first copy {first_without:.3f}, repeat {repeat_without:.3f} nats")
    assert repeat_without > repeat + 2.5  # the copying is gone
    if role == "induction":
        assert abs(repeat_without - math.log(V)) < 0.3  # back to guessing

one = test[0].tolist()
single = ablation(model, one, kind="mean")  # `lucidlm lens ablate`: one text, the loss each head's removal adds
print(
    f"lucidlm lens ablate on one sequence: head 0.0 adds {single['heads'][0][0]:.2f}, 1.0 {single['heads'][1][0]:.2f}"
)
assert min(single["heads"][0][0], single["heads"][1][0]) > 1.0

# %% [markdown]
# **Activation patching** asks *where* the answer's evidence lives. Take a clean prompt, 20 random tokens and
# the first 11 of them again, whose answer is the token that followed the 11th the first time. Corrupt it by
# changing one token of the first copy: the 11th itself, at position $k = 10$. Now the last token has no earlier
# twin and the model loses its answer. Then run the corrupted prompt with one activation of the clean run put
# back, the residual stream entering a layer at one position, and measure how much of the clean logit
# difference (the answer against the corrupted run's favourite) comes back: 1 is all of it, 0 none.
#
# The circuit predicts the picture exactly. Entering layer 0, the evidence is the token at position $k$, so
# only position $k$ matters. Layer 0's previous-token head then copies it one position on, into $k + 1$: entering
# layer 1 it lives at $k + 1$ alone, where the induction head's key reads it. The last position never matters:
# its token is the same in both runs.

# %%
prompt = test[1, :n]
k = 10
clean = prompt.tolist() + prompt[: k + 1].tolist()
corrupted = list(clean)
corrupted[k] = next(token for token in range(V) if token not in clean)  # a token the prompt never has
with torch.no_grad():
    clean_last, corrupted_last = (model(torch.tensor([ids]))[0][0, -1] for ids in (clean, corrupted))
answer = clean[k + 1]
wrong = next(token for token in corrupted_last.argsort(descending=True).tolist() if token != answer)
assert clean_last.argmax().item() == answer
patched = patching(model, clean, corrupted, answer, wrong)  # `lucidlm lens patch`
print(f"logit difference: clean {patched['clean_difference']:.2f}, corrupted {patched['corrupted_difference']:.2f}")
shown = [*range(k - 2, k + 4), len(clean) - 1]  # around k, and the last position
print("position      " + " ".join(f"{p:5d}" for p in shown))
for layer, restored in enumerate(patched["residual"]):
    print(f"into layer {layer}  " + " ".join(f"{restored[p]:5.2f}" for p in shown))
for layer, restored in enumerate(patched["residual"]):
    where = k + layer  # k entering layer 0, k + 1 entering layer 1
    assert restored[where] > 0.9
    assert all(abs(value) < 0.15 for p, value in enumerate(restored) if p != where)

print(
    "lesson 23 ok: an induction head grew, was found by its score, and ablating or patching it did what the circuit says"
)
