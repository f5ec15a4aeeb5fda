# %% [markdown]
# # Lesson 24: supervised fine-tuning, and the loss mask
#
# A base model continues text. To make it *answer*, it is fine-tuned on conversations: each one is written out
# through a **chat template** as one sequence of tokens, with special tokens where each turn begins and ends,
#
# `<|user|>What is 2 plus 3?<|end|><|assistant|>5<|end|>`
#
# and trained on next-token prediction as before, with one change: only the **reply's** tokens teach. The
# question is read (it is the context) but its tokens are not targets. Each position $t$ gets a mask bit $m_t$,
# 1 on the assistant's tokens and the end-of-turn token after them, and the loss is the mean over the masked
# positions only:
#
# $$\mathcal{L} = -\frac{1}{\sum_t m_t} \sum_t m_t \log p_\theta(x_{t+1} \mid x_{\le t})$$
#
# Why: the model is asked to write replies, not questions. Learning to predict the user's text wastes capacity
# and, worse, teaches the model to speak for the user. Below: the template and its mask, the loss with and
# without it, the gradient that the question's positions get (exactly none), and what each model learns.

# %%
import numpy as np

from lucidlm.chat.data import encode_conversation
from lucidlm.chat.template import CHAT_TOKENS, OWN_CHAT_TEMPLATE, render_template
from lucidlm.model.config import GPTConfig
from lucidlm.scratch import AdamW, NumpyGPT
from lucidlm.scratch.layers import crossentropy_backward, crossentropy_forward
from lucidlm.tokenizers import CharTokenizer

conversation = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "5"}]
text = render_template(OWN_CHAT_TEMPLATE, conversation, add_generation_prompt=False)
print(text)
assert text == "<|user|>What is 2 plus 3?<|end|><|assistant|>5<|end|>"

tokenizer = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789?."])
tokenizer = tokenizer.with_special_tokens(CHAT_TOKENS)  # each special token is one id
ids, mask, _ = encode_conversation(tokenizer, conversation)
for token, bit in zip(ids, mask, strict=True):
    print(f"{tokenizer.decode([token])!r:18} mask {bit}")
learned = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
assert learned == "5<|end|>"  # the reply and the end of its turn, nothing else
assert len(ids) == 1 + len("What is 2 plus 3?") + 1 + 1 + 1 + 1

# %% [markdown]
# ## The masked loss
# The targets are the sequence shifted by one; a masked-out target is written $-1$, which the loss skips (as
# PyTorch's `cross_entropy(..., ignore_index=-1)` in `lucidlm train`). The mean is then over the learned targets
# alone, exactly the formula above, computed here by hand beside it.

# %%
config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)
model = NumpyGPT(config, seed=0)
x = np.array([ids[:-1]])
targets = np.array([ids[1:]])


def masked_targets(ids: list[int], mask: list[int]) -> np.ndarray:
    """The targets of a sequence of T + 1 tokens with its mask (1 where a token is learned): position t's
    target is ids[t + 1] where mask[t + 1] is 1, and -1 (ignored by the loss) where it is 0. -> (T,) ints."""
    ### BEGIN SOLUTION
    return np.where(np.array(mask[1:]) == 1, ids[1:], -1)
    ### END SOLUTION


masked = masked_targets(ids, mask)[None]
logits, masked_loss = model.forward(x, masked)
shifted = logits[0] - logits[0].max(axis=-1, keepdims=True)
log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
picked = log_probabilities[np.arange(len(ids) - 1), targets[0]]
by_hand = -(picked * np.array(mask[1:])).sum() / sum(mask[1:])
full_loss = -picked.mean()
print(f"masked loss {masked_loss:.4f} (by hand {by_hand:.4f}), every token {full_loss:.4f}")
assert abs(masked_loss - by_hand) < 1e-5
assert abs(model.forward(x, targets)[1] - full_loss) < 1e-5

# %% [markdown]
# ## The question's positions get no gradient
# The loss's gradient with respect to the logits is $(\mathrm{softmax}(z_t) - \mathrm{onehot}(x_{t+1})) / n$ at a
# learned position (lesson 15) and exactly zero elsewhere: nothing pushes the model to predict the user's words.

# %%
_, cache = crossentropy_forward(logits, masked)
per_position = np.abs(crossentropy_backward(1.0, cache)[0]).sum(axis=-1)
learned_positions = [t for t, m in enumerate(mask[1:]) if m]
assert all(per_position[t] == 0 for t in range(len(ids) - 1) if t not in learned_positions)
assert all(per_position[t] > 0 for t in learned_positions)
print(f"positions with a gradient: {learned_positions} of {len(ids) - 1}")

# %% [markdown]
# ## What each loss teaches
# Two copies of one model train on a few questions, one with the mask and one on every token. Then, given a
# question, both reply; and both are asked what a question looks like: the probability they give the first
# character of a user's question right after `<|user|>`. The masked model learns the replies just as well,
# and never learns to write the questions.

# %%
questions = [(f"What is {a} plus {b}?", str(a + b)) for a, b in [(2, 3), (4, 1), (3, 3), (1, 5), (2, 2), (6, 1)]]
encoded = [encode_conversation(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
           for q, a in questions]  # fmt: skip
width = max(len(ids) for ids, _, _ in encoded)
x = np.zeros((len(encoded), width - 1), dtype=np.int64)
all_targets = np.full((len(encoded), width - 1), -1)
reply_targets = np.full((len(encoded), width - 1), -1)
for row, (ids, mask, _) in enumerate(encoded):
    x[row, : len(ids) - 1] = ids[:-1]
    all_targets[row, : len(ids) - 1] = ids[1:]
    reply_targets[row, : len(ids) - 1] = masked_targets(ids, mask)


def probabilities(model: NumpyGPT, prompt: list[int]) -> np.ndarray:
    """The model's next-token distribution after `prompt`."""
    logits = model.forward(np.array([prompt]))[0][0, -1].astype(np.float64)
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


trained = {}
for name, y in (("masked", reply_targets), ("every token", all_targets)):
    model = NumpyGPT(config, seed=1)  # the same start for both
    optimizer = AdamW(model.params, lr=3e-3)
    for _ in range(400):
        _, loss = model.forward(x, y)
        optimizer.step(model.backward())
    user, assistant = tokenizer.special_tokens["<|user|>"], tokenizer.special_tokens["<|assistant|>"]
    replies = []
    for (ids, _, _), (_, answer) in zip(encoded, questions, strict=True):
        prompt = ids[: ids.index(assistant) + 1]
        replies.append(tokenizer.decode([int(probabilities(model, prompt).argmax())]) == answer)
    p_question = probabilities(model, [user])[tokenizer.encode("W")[0]]
    trained[name] = (sum(replies), p_question)
    print(f"{name:12}: {sum(replies)} of {len(questions)} replies right; p('W' after <|user|>) = {p_question:.3f}")
assert trained["masked"][0] == len(questions) and trained["every token"][0] == len(questions)
assert trained["every token"][1] > 0.9  # it learned to write the user's question
assert trained["masked"][1] < 0.2  # it was never asked to
print("lesson 24 ok: the template, the mask, the masked loss and its gradient, and what it does not teach")
