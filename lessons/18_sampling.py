# %% [markdown]
# # Lesson 18: sampling
#
# A trained model gives a probability for every possible next token. How we pick one shapes the text:
#
# - **greedy**: always the most likely token. Deterministic, and prone to loops.
# - **temperature** $T$: sample from $\mathrm{softmax}(z / T)$ (lesson 6). Low $T$ is careful, high $T$ is wild.
# - **top-k**: keep only the $k$ most likely tokens, renormalise, sample.
# - **top-p** (nucleus): keep the smallest set of most likely tokens whose probabilities reach $p$.
#
# Below, a small GPT learns a short text for a few seconds (the NumPy GPT of lessons 15-17); then the same
# prompt is continued each way. `lucidlm generate` does the same in PyTorch (`--temperature`, `--top-k`,
# `--top-p`); the tests hold the two samplers to the same tokens.

# %%
import numpy as np

from lucidlm.model.config import GPTConfig
from lucidlm.scratch import AdamW, NumpyGPT
from lucidlm.scratch.sampling import filter_logits
from lucidlm.tokenizers import CharTokenizer

text = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n"
) * 20
tokenizer = CharTokenizer.train([text])
data = np.array(tokenizer.encode(text))
model = NumpyGPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=48), seed=0)
optimizer = AdamW(model.params, lr=3e-3)
rng = np.random.default_rng(0)
for _ in range(200):
    starts = rng.integers(0, len(data) - 49, 8)
    x = np.stack([data[s : s + 48] for s in starts])
    y = np.stack([data[s + 1 : s + 49] for s in starts])
    _, loss = model.forward(x, y)
    optimizer.step(model.backward())
print(f"trained 200 steps, loss {loss:.3f}\n")
prompt = tokenizer.encode("JULIET:\nO ")


def continue_with(seed: int = 0, **sampling) -> str:
    return tokenizer.decode(model.generate(prompt, 40, rng=np.random.default_rng(seed), **sampling))


for label, sampling in [
    ("greedy", dict(temperature=0)),
    ("T = 0.5", dict(temperature=0.5)),
    ("T = 2.0", dict(temperature=2.0)),
    ("top-k 3", dict(top_k=3)),
    ("top-p 0.9", dict(top_p=0.9)),
]:
    print(f"{label:9} | O {continue_with(**sampling)!r}")

greedy = continue_with(temperature=0)
assert greedy.startswith("Romeo, Romeo, wherefore art thou Romeo?")
assert continue_with(seed=1, top_k=1) == greedy  # top-1 sampling is greedy
assert continue_with(seed=7, temperature=1.0) == continue_with(seed=7, temperature=1.0)  # a seed repeats

# %% [markdown]
# ## What top-k and top-p keep
# On one real next-token distribution: top-k keeps a fixed number of tokens; top-p keeps as many as needed to
# cover probability $p$: few when the model is sure, many when it is not.


# %%
def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Top-p (nucleus) filtering of logits (V,): keep the most likely tokens, most likely first, until their
    probabilities reach p (the token that crosses p stays; the most likely token always stays); the others
    become -inf, the kept logits unchanged. -> (V,)."""
    ### BEGIN SOLUTION
    order = np.argsort(-logits, kind="stable")
    probabilities = np.exp(logits[order] - logits[order[0]])
    probabilities /= probabilities.sum()
    before = np.cumsum(probabilities) - probabilities  # the probability of the tokens ahead of each
    filtered = np.full_like(logits, -np.inf, dtype=float)
    kept = order[(before < p) | (np.arange(len(order)) == 0)]
    filtered[kept] = logits[kept]
    return filtered
    ### END SOLUTION


logits = model.forward(np.array([tokenizer.encode("ROMEO:\nBut s")]))[0][0, -1].astype(np.float64)
probabilities = np.exp(logits - logits.max())
probabilities /= probabilities.sum()
for sampling in (dict(top_k=3), dict(top_p=0.5), dict(top_p=0.99)):
    kept = np.isfinite(filter_logits(logits, **sampling))
    print(f"{sampling}: keeps {kept.sum()} tokens holding {probabilities[kept].sum():.3f} of the probability")
kept = np.isfinite(top_p_filter(logits, 0.9))
assert np.array_equal(kept, np.isfinite(filter_logits(logits, top_p=0.9)))  # the sampler's own filter agrees
assert probabilities[kept].sum() >= 0.9
smaller = probabilities[kept].sum() - probabilities[kept].min()
assert smaller < 0.9  # and no token could be dropped: it is the smallest such set


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Top-k filtering of logits (V,): the k largest stay as they are, the others become -inf (with ties at the
    k-th value, every tied logit stays, as the sampler does). -> (V,)."""
    ### BEGIN SOLUTION
    return np.where(logits < np.sort(logits)[-k], -np.inf, logits)
    ### END SOLUTION


assert np.isfinite(top_k_filter(logits, 3)).sum() == 3
assert np.array_equal(np.isfinite(top_k_filter(logits, 3)), np.isfinite(filter_logits(logits, top_k=3)))
print("lesson 18 ok: greedy, temperature, top-k and top-p, on a trained model")
