# %% [markdown]
# # Lesson 28: your GPT, made of your own functions
#
# Every exercise of the course wrote one piece of a GPT. Here they come together: the token table (lesson 4),
# the sinusoidal positions (9), the layer norm (14) and its backward pass (16), the linear layer (3) and its
# backward pass (8), the heads' split (13), the softmax (6), the ReLU (5), the cross-entropy (7), the AdamW step
# (17) and top-p sampling (18). Each is taken from where you wrote it (your edits in this browser, your
# `lucidlm exercises` workspace, or the lessons as shipped) and checked first. If one does not pass yet, the
# first cell stops and names it: nothing of lucidlm's own replaces it.
#
# The rest is the glue a GPT needs, written out below: the causal mask, the attention's backward pass (lesson
# 16 showed it with lucidlm.scratch's), the residual stream, the embedding's gradient and the loop. The model
# trains on the opening of Tiny Shakespeare (2,528 characters, one a token: it has room to learn them nearly by
# heart) until its loss falls below 1.5 nats per character, and then writes.

# %%
import math
import time

import numpy as np

from lucidlm.exercises.capstone import NotSolvedYet, learners_functions

KEYS = ["3.linear", "4.embed", "5.relu", "6.softmax", "7.cross_entropy", "8.linear_backward", "9.sinusoidal_table",
        "13.split_heads", "14.layernorm", "16.layernorm_backward", "17.adamw_update", "18.top_p_filter"]  # fmt: skip
try:
    mine = learners_functions(KEYS)
except NotSolvedYet as unsolved:
    raise SystemExit(f"lesson 28: {unsolved}") from None  # a message, not a traceback: the fix is in your lessons
linear, embed, relu, softmax, cross_entropy = (mine[n] for n in ("linear", "embed", "relu", "softmax", "cross_entropy"))
linear_backward, sinusoidal_table, split_heads = mine["linear_backward"], mine["sinusoidal_table"], mine["split_heads"]
layernorm, layernorm_backward = mine["layernorm"], mine["layernorm_backward"]
adamw_update, top_p_filter = mine["adamw_update"], mine["top_p_filter"]
print(f"{len(mine)} of your functions passed their checks: {', '.join(mine)}")

# %% [markdown]
# ## The model
# Two blocks of four heads over 48 channels, a window of 32 characters, the output head tied to the token
# table. Every weight is stored (in, out), as your `linear` takes it. Each function returns what its backward
# pass needs, as llm.c's layers do.

# %%
TEXT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.

First Citizen:
First, you know Caius Marcius is chief enemy to the people.

All:
We know't, we know't.

First Citizen:
Let us kill him, and we'll have corn at our own price.
Is't a verdict?

All:
No more talking on't; let it be done: away, away!

Second Citizen:
One word, good citizens.

First Citizen:
We are accounted poor citizens, the patricians good.
What authority surfeits on would relieve us: if they
would yield us but the superfluity, while it were
wholesome, we might guess they relieved us humanely;
but they think we are too dear: the leanness that
afflicts us, the object of our misery, is as an
inventory to particularise their abundance; our
sufferance is a gain to them Let us revenge this with
our pikes, ere we become rakes: for the gods know I
speak this in hunger for bread, not in thirst for revenge.

Second Citizen:
Would you proceed especially against Caius Marcius?

All:
Against him first: he's a very dog to the commonalty.

Second Citizen:
Consider you what services he has done for his country?

First Citizen:
Very well; and could be content to give him good
report fort, but that he pays himself with being proud.

Second Citizen:
Nay, but speak not maliciously.

First Citizen:
I say unto you, what he hath done famously, he did
it to that end: though soft-conscienced men can be
content to say it was for his country he did it to
please his mother and to be partly proud; which he
is, even till the altitude of his virtue.

Second Citizen:
What he cannot help in his nature, you account a
vice in him. You must in no way say he is covetous.

First Citizen:
If I must not, I need not be barren of accusations;
he hath faults, with surplus, to tire in repetition.
What shouts are these? The other side o' the city
is risen: why stay we prating here? to the Capitol!

All:
Come, come.

First Citizen:
Soft! who comes here?

Second Citizen:
Worthy Menenius Agrippa; one that hath always loved
the people.

First Citizen:
He's one honest enough: would all the rest were so!

MENENIUS:
What work's, my countrymen, in hand? where go you
With bats and clubs? The matter? speak, I pray you.

First Citizen:
Our business is not unknown to the senate; they have
had inkling this fortnight what we intend to do,
which now we'll show 'em in deeds. They say poor
suitors have strong breaths: they shall know we
have strong arms too."""
vocabulary = sorted(set(TEXT))
data = np.array([vocabulary.index(ch) for ch in TEXT])
V, T, C, H, LAYERS = len(vocabulary), 32, 48, 4, 2
D = C // H
rng = np.random.default_rng(0)
# The logits are the unit-variance stream times the token table: at GPT-2's 0.02 they start tiny, and training
# crawled near the unigram loss for 400 steps in our runs; at 0.1 it starts learning at once.
params = {"wte": rng.normal(0, 0.1, (V, C))}
for layer in range(LAYERS):
    params |= {
        f"{layer}.qkv": rng.normal(0, 0.02, (C, 3 * C)), f"{layer}.qkv_bias": np.zeros(3 * C),
        f"{layer}.proj": rng.normal(0, 0.02 / math.sqrt(2 * LAYERS), (C, C)), f"{layer}.proj_bias": np.zeros(C),
        f"{layer}.fc": rng.normal(0, 0.02, (C, 4 * C)), f"{layer}.fc_bias": np.zeros(4 * C),
        f"{layer}.out": rng.normal(0, 0.02 / math.sqrt(2 * LAYERS), (4 * C, C)), f"{layer}.out_bias": np.zeros(C),
    }  # fmt: skip
positions = sinusoidal_table(T, C)  # fixed, not learned
mask = np.triu(np.full((T, T), -np.inf), k=1)


def norm_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Your layer norm, and the cache your layernorm_backward takes (its gain is 1, no bias)."""
    rstd = 1 / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    return layernorm(x), (layernorm(x), rstd, np.ones(x.shape[-1]), False)


def merge_heads(y: np.ndarray) -> np.ndarray:
    B, _, T, _ = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, C)  # (B, H, T, D) -> (B, T, C)


def attention_forward(h: np.ndarray, layer: int) -> tuple[np.ndarray, dict]:
    qkv = linear(h, params[f"{layer}.qkv"], params[f"{layer}.qkv_bias"])  # (B, T, 3C)
    q, k, v = (split_heads(part, H) for part in np.split(qkv, 3, axis=-1))  # (B, H, T, D) each
    weights = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(D) + mask[: h.shape[1], : h.shape[1]])
    y = merge_heads(weights @ v)
    return linear(y, params[f"{layer}.proj"], params[f"{layer}.proj_bias"]), {"h": h, "q": q, "k": k, "v": v,
                                                                                "weights": weights, "y": y}  # fmt: skip


def attention_backward(dout: np.ndarray, cache: dict, layer: int, grads: dict) -> np.ndarray:
    B, T, _ = dout.shape
    dy, grads[f"{layer}.proj"], grads[f"{layer}.proj_bias"] = linear_backward(
        dout.reshape(-1, C), cache["y"].reshape(-1, C), params[f"{layer}.proj"]
    )
    dy = split_heads(dy.reshape(B, T, C), H)  # (B, H, T, D)
    q, k, v, weights = cache["q"], cache["k"], cache["v"], cache["weights"]
    dweights = dy @ v.transpose(0, 1, 3, 2)
    dscores = weights * (dweights - (dweights * weights).sum(axis=-1, keepdims=True)) / math.sqrt(D)
    dq, dk, dv = dscores @ k, dscores.transpose(0, 1, 3, 2) @ q, weights.transpose(0, 1, 3, 2) @ dy
    dqkv = np.concatenate([merge_heads(d) for d in (dq, dk, dv)], axis=-1).reshape(-1, 3 * C)
    dh, grads[f"{layer}.qkv"], grads[f"{layer}.qkv_bias"] = linear_backward(
        dqkv, cache["h"].reshape(-1, C), params[f"{layer}.qkv"]
    )
    return dh.reshape(B, T, C)


def mlp_forward(h: np.ndarray, layer: int) -> tuple[np.ndarray, dict]:
    hidden = linear(h, params[f"{layer}.fc"], params[f"{layer}.fc_bias"])  # (B, T, 4C)
    active = relu(hidden)
    return linear(active, params[f"{layer}.out"], params[f"{layer}.out_bias"]), {"h": h, "hidden": hidden,
                                                                                   "active": active}  # fmt: skip


def mlp_backward(dout: np.ndarray, cache: dict, layer: int, grads: dict) -> np.ndarray:
    B, T, _ = dout.shape
    dactive, grads[f"{layer}.out"], grads[f"{layer}.out_bias"] = linear_backward(
        dout.reshape(-1, C), cache["active"].reshape(-1, 4 * C), params[f"{layer}.out"]
    )
    dhidden = dactive * (cache["hidden"].reshape(-1, 4 * C) > 0)  # ReLU passes the gradient where it was > 0
    dh, grads[f"{layer}.fc"], grads[f"{layer}.fc_bias"] = linear_backward(
        dhidden, cache["h"].reshape(-1, C), params[f"{layer}.fc"]
    )
    return dh.reshape(B, T, C)


def forward(ids: np.ndarray) -> tuple[np.ndarray, list]:
    """Logits (B, T, V) for ids (B, T), and every layer's cache."""
    B, T = ids.shape
    x = embed(ids.reshape(-1).tolist(), params["wte"]).reshape(B, T, C) + positions[:T]
    caches = []
    for layer in range(LAYERS):  # x + attention(norm(x)), then + mlp(norm(...)): the residual stream
        h, norm1 = norm_forward(x)
        attended, attention = attention_forward(h, layer)
        x = x + attended
        h, norm2 = norm_forward(x)
        transformed, mlp = mlp_forward(h, layer)
        x = x + transformed
        caches.append((norm1, attention, norm2, mlp))
    h, final = norm_forward(x)
    return linear(h, params["wte"].T, np.zeros(V)), [ids, caches, final, h]


def backward(logits: np.ndarray, targets: np.ndarray, cache: list) -> dict:
    """The gradient of the mean cross-entropy with respect to every parameter."""
    ids, caches, final, h = cache
    B, T, _ = logits.shape
    dlogits = softmax(logits).reshape(-1, V)
    dlogits[np.arange(B * T), targets.reshape(-1)] -= 1  # softmax - one-hot (lesson 7), over B T positions
    grads = {}
    dh, dhead, _ = linear_backward(dlogits / (B * T), h.reshape(-1, C), params["wte"].T)
    dx = layernorm_backward(dh.reshape(B, T, C), final)[0]
    for layer in reversed(range(LAYERS)):
        norm1, attention, norm2, mlp = caches[layer]
        dx = dx + layernorm_backward(mlp_backward(dx, mlp, layer, grads), norm2)[0]
        dx = dx + layernorm_backward(attention_backward(dx, attention, layer, grads), norm1)[0]
    grads["wte"] = dhead.T  # the token table is also the head: both gradients add up
    np.add.at(grads["wte"], ids.reshape(-1), dx.reshape(-1, C))
    return grads


# One look at finite differences before training: your backward passes, composed, give the true gradient.
x, y = data[:T][None], data[1 : T + 1][None]
logits, cache = forward(x)
grads = backward(logits, y, cache)
for name, index in (("0.qkv", (3, 5)), ("1.out", (7, 2)), ("wte", (int(x[0, 4]), 1))):
    kept = params[name][index]
    params[name][index] = kept + 1e-5
    up = cross_entropy(forward(x)[0][0], y[0])
    params[name][index] = kept - 1e-5
    down = cross_entropy(forward(x)[0][0], y[0])
    params[name][index] = kept
    assert abs((up - down) / 2e-5 - grads[name][index]) < 1e-6 + 1e-4 * abs(grads[name][index]), name
print("the composed gradient equals finite differences on three weights")

# %% [markdown]
# ## Training
# Batches of 16 windows, your AdamW step on every parameter. It stops once the mean loss of the last 20 steps
# is below 1.5 nats per character, or after 1,500 steps.

# %%
moments = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in params.items()}
losses, started = [], time.perf_counter()
for step in range(1, 1501):
    starts = rng.integers(0, len(data) - T - 1, 16)
    x = np.stack([data[s : s + T] for s in starts])
    y = np.stack([data[s + 1 : s + T + 1] for s in starts])
    logits, cache = forward(x)
    losses.append(cross_entropy(logits.reshape(-1, V), y.reshape(-1)))
    for name, grad in backward(logits, y, cache).items():
        params[name], *moments[name] = adamw_update(params[name], grad, *moments[name], t=step, lr=3e-3)
    if step % 100 == 0:
        print(f"step {step}: loss {np.mean(losses[-20:]):.3f} ({time.perf_counter() - started:.1f} s)", flush=True)
    if np.mean(losses[-20:]) < 1.5:
        break
print(
    f"{step} steps: loss {np.mean(losses[-20:]):.3f} nats per character, from {losses[0]:.3f} (ln V = {math.log(V):.3f})"
)
assert np.mean(losses[-20:]) < 1.5

# %% [markdown]
# ## Your GPT writes
# Each new character is drawn from your softmax of the last position's logits, after your top-p filter.

# %%
ids = [vocabulary.index(ch) for ch in "First Citizen:\n"]
for _ in range(200):
    logits, _ = forward(np.array([ids[-T:]]))
    probabilities = softmax(top_p_filter(logits[0, -1] / 0.8, 0.9))
    ids.append(int(rng.choice(V, p=probabilities)))
written = "".join(vocabulary[i] for i in ids)
print(written)
assert len(written) == len("First Citizen:\n") + 200 and set(written) <= set(vocabulary)
print("lesson 28 ok: a GPT of your own functions trained below 1.5 nats per character and wrote")
