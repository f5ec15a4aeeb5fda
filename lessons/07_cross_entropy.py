# %% [markdown]
# # Lesson 7: cross-entropy and the next-token objective
#
# A language model is trained to predict the next token. For each position it outputs probabilities $p$ over
# the $V$ tokens, and the loss is the negative log-probability it gave to the token that actually came next:
#
# $$\ell = -\log p_{\text{target}} .$$
#
# Averaged over all positions this is the cross-entropy, in nats per token. A perfect prediction costs 0; a
# uniform guess gives every token $1/V$ and costs $-\log(1/V) = \ln V$. That is why a freshly initialised
# model's loss starts near $\ln V$: about 4.17 for Shakespeare's 65 characters.

# %%
import numpy as np


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """The mean of -log softmax(logits)[target] over N positions: logits (N, V), targets (N,) ints, a float.
    Computed from the logits (log-sum-exp), so that large logits neither overflow nor give log(0)."""
    ### BEGIN SOLUTION
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(targets)), targets].mean())
    ### END SOLUTION


V = 65
uniform = np.zeros((10, V))  # equal logits: a uniform guess
targets = np.random.default_rng(0).integers(0, V, 10)
print(f"uniform guess over {V} tokens: loss {cross_entropy(uniform, targets):.4f}, ln V = {np.log(V):.4f}")
assert np.isclose(cross_entropy(uniform, targets), np.log(V))

confident = np.full((10, V), -10.0)
confident[np.arange(10), targets] = 10.0
wrong = np.full((10, V), -10.0)
wrong[np.arange(10), (targets + 1) % V] = 10.0
print(
    f"confident and right: {cross_entropy(confident, targets):.2e}; confident and wrong: "
    f"{cross_entropy(wrong, targets):.1f}"
)
assert cross_entropy(confident, targets) < 1e-6 < 19 < cross_entropy(wrong, targets)

# %% [markdown]
# ## The next-token setup
# From one text the training pairs come for free: the input is the sequence, the target is the same sequence
# shifted one step left. Every position is one prediction.

# %%
text = "hello"
inputs, targets_text = text[:-1], text[1:]
for i, nxt in enumerate(targets_text):
    print(f"after {text[: i + 1]!r:9} predict {nxt!r}")
assert list(zip(inputs, targets_text, strict=True)) == [("h", "e"), ("e", "l"), ("l", "l"), ("l", "o")]
# The perplexity exp(loss) reads as "as unsure as a uniform choice among this many tokens".
assert np.isclose(np.exp(cross_entropy(uniform, targets)), V)
print("lesson 7 ok: the loss of a uniform guess is ln V; the targets are the inputs shifted by one")
