# %% [markdown]
# # Lesson 22: the logit lens
#
# A GPT keeps one vector per position, the residual stream, and every block adds to it: its attention's output,
# then its MLP's (lesson 14). Only at the end do the final norm and the unembedding $W_U$ turn the stream into
# logits (lesson 15). Nothing stops us from taking that last step early. Reading the stream $x_\ell$ after
# layer $\ell$ the same way,
#
# $$\text{lens}_\ell = W_U \, \text{norm}(x_\ell),$$
#
# gives the logits the model would output if it stopped there: the *logit lens* (nostalgebraist, 2020). After
# the last layer the lens is the output itself. On a trained model the earlier readings come closer to the
# output layer by layer, and how close is measured by the KL divergence of each reading $q_\ell$ from the
# output distribution $p$, in nats and averaged over positions:
#
# $$\mathrm{KL}(p \,\|\, q_\ell) = \sum_v p_v \left(\log p_v - \log q_{\ell,v}\right).$$
#
# Below, a 4-layer GPT (the NumPy one) trains for a few seconds on sentences from a small grammar, and the lens
# is read by hand through the model's hook points (`run_with_cache`, the names TransformerLens uses).
# `lucidlm lens logit` reads the same lens from a PyTorch run; the tests hold the two to the same numbers.

# %%
import random
from itertools import pairwise

import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import AdamW, NumpyGPT
from lucidlm.scratch.layers import layernorm_forward

random.seed(0)
subjects, verbs, places = ["the cat", "a dog", "the bird", "my fox"], ["sat", "ran", "slept"], ["mat", "tree", "bed"]
text = " ".join(
    f"{random.choice(subjects)} {random.choice(verbs)} on the {random.choice(places)}." for _ in range(3000)
)
vocabulary = sorted(set(text))
data = np.array([vocabulary.index(ch) for ch in text])
config = GPTConfig(vocab_size=len(vocabulary), block_size=32, n_layer=4, n_head=2, n_embd=64)
model = NumpyGPT(config, seed=0)
optimizer = AdamW(model.params, lr=3e-3, weight_decay=0.0)
windows = data[: len(data) // 33 * 33].reshape(-1, 33)  # the text cut into windows of 32 + 1 characters
rng = np.random.default_rng(0)
for _ in range(150):
    batch = windows[rng.integers(0, len(windows), 8)]
    _, loss = model.forward(batch[:, :-1], batch[:, 1:])  # each character predicts the next
    optimizer.step(model.backward())
print(f"trained 150 steps: loss {loss:.3f} nats per character")
assert loss < 0.8  # the grammar leaves little to guess: a word's letters, then its successor

# %% [markdown]
# The residual stream before the first block (`blocks.0.hook_resid_pre`, the embeddings) and after each block
# (`blocks.{l}.hook_resid_post`) comes out of one forward pass, and each is read through the final norm and the
# unembedding (tied to the token embedding, so $W_U = W_E$).


# %%
def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def read_out(stream: np.ndarray, gain: np.ndarray, unembedding: np.ndarray) -> np.ndarray:
    """Logits from a residual stream (..., C): the final LayerNorm (eps 1e-5, its gain (C,), no bias), then the
    unembedding (V, C), as the model's last step does. -> (..., V)."""
    ### BEGIN SOLUTION
    normed, _ = layernorm_forward(stream, gain, None, 1e-5)
    return normed @ unembedding.T
    ### END SOLUTION


def lens(stream: np.ndarray) -> np.ndarray:
    """A residual stream read out as logits: ln_f, then the unembedding."""
    return read_out(stream, model.params["transformer.ln_f.weight"], model.params["transformer.wte.weight"])


prompt = "a dog ran. my fox sat on the mat"
ids = np.array([[vocabulary.index(ch) for ch in prompt]])
names = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(config.n_layer)]
logits, cache = model.run_with_cache(ids)
readings = [lens(cache[name]) for name in names]  # each (1, T, V)
assert np.allclose(readings[-1], logits, atol=1e-5)  # after the last layer, the lens is the output

output = log_softmax(logits[0].astype(np.float64))  # (T, V)
kl = [float((np.exp(output) * (output - log_softmax(reading[0].astype(np.float64)))).sum(-1).mean())
      for reading in readings]  # fmt: skip
layers = ["embeddings", *(f"layer {layer}" for layer in range(config.n_layer))]
for name, value in zip(layers, kl, strict=True):
    print(f"{name:>10}: KL to the output {value:.4f} nats")
assert all(earlier > later for earlier, later in pairwise(kl))  # the readings come closer layer by layer
assert abs(kl[-1]) < 1e-6

# %% [markdown]
# Where does the model make up its mind? Follow the characters after "on the ": the grammar says a place comes
# next. At each layer, the lens's top guess for the character after each position:

# %%
shown = slice(prompt.index("on the m"), len(prompt))
print("position:  " + "".join(f"{ch!r:>5}" for ch in prompt[shown]))
predicted = output.argmax(-1)  # (T,) the model's own next character at each position
probability = []
for layer, reading in zip(layers, readings, strict=True):
    guesses = log_softmax(reading[0].astype(np.float64))
    print(f"{layer:>10}: " + "".join(f"{vocabulary[t]!r:>5}" for t in guesses.argmax(-1)[shown]))
    probability.append(float(np.exp(guesses[np.arange(len(predicted)), predicted]).mean()))
print("the final guess's mean probability, layer by layer:", " ".join(f"{p:.2f}" for p in probability))
assert probability[-1] > probability[0]  # the embeddings alone rarely hold the answer; the last layer does

# %% [markdown]
# The embeddings' row guesses each character itself: this GPT ties its unembedding to its embedding, so a
# token's own vector reads out as that token. The first block already moves most positions to the right next
# character; the later ones settle what the first could not, such as which place follows "on the ".

# %%
print("lesson 22 ok: the last layer's lens is the output, and the lens's KL to it falls layer by layer")
