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
import torch
import torch.nn.functional as F

from lucidlm.chat.data import encode_conversation
from lucidlm.chat.template import CHAT_TOKENS, OWN_CHAT_TEMPLATE, render_template
from lucidlm.model import GPT, GPTConfig
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
# The targets are the sequence shifted by one; a masked-out target is written $-1$, which
# `cross_entropy(..., ignore_index=-1)` skips. The mean is then over the learned targets alone, exactly the
# formula above, computed here by hand beside it.

# %%
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
x = torch.tensor([ids[:-1]])
targets = torch.tensor([ids[1:]])
masked = torch.where(torch.tensor([mask[1:]]) == 1, targets, -1)
logits, masked_loss = model(x, masked)
log_probabilities = F.log_softmax(logits[0], dim=-1)
picked = log_probabilities[torch.arange(len(ids) - 1), targets[0]]
by_hand = -(picked * torch.tensor(mask[1:])).sum() / sum(mask[1:])
full_loss = -picked.mean()
print(f"masked loss {masked_loss.item():.4f} (by hand {by_hand.item():.4f}), every token {full_loss.item():.4f}")
assert abs(masked_loss.item() - by_hand.item()) < 1e-5
assert abs(model(x, targets)[1].item() - full_loss.item()) < 1e-5

# %% [markdown]
# ## The question's positions get no gradient
# The loss's gradient with respect to the logits is $(\mathrm{softmax}(z_t) - \mathrm{onehot}(x_{t+1})) / n$ at a
# learned position (lesson 15) and exactly zero elsewhere: nothing pushes the model to predict the user's words.

# %%
logits = logits.detach().requires_grad_()
F.cross_entropy(logits[0], masked[0], ignore_index=-1).backward()
per_position = logits.grad[0].abs().sum(-1)
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
x = torch.zeros(len(encoded), width - 1, dtype=torch.long)
all_targets = torch.full((len(encoded), width - 1), -1)
reply_targets = torch.full((len(encoded), width - 1), -1)
for row, (ids, mask, _) in enumerate(encoded):
    x[row, : len(ids) - 1] = torch.tensor(ids[:-1])
    all_targets[row, : len(ids) - 1] = torch.tensor(ids[1:])
    reply_targets[row, : len(ids) - 1] = torch.where(torch.tensor(mask[1:]) == 1, torch.tensor(ids[1:]), -1)

trained = {}
for name, y in (("masked", reply_targets), ("every token", all_targets)):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(x, y)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained[name] = model.eval()

user, assistant = tokenizer.special_tokens["<|user|>"], tokenizer.special_tokens["<|assistant|>"]
for name, model in trained.items():
    with torch.no_grad():
        replies = []
        for (ids, _, _), (_, answer) in zip(encoded, questions, strict=True):
            prompt = ids[: ids.index(assistant) + 1]
            replies.append(tokenizer.decode([int(model(torch.tensor([prompt]))[0][0, -1].argmax())]) == answer)
        p_question = model(torch.tensor([[user]]))[0][0, -1].softmax(-1)[tokenizer.encode("W")[0]].item()
    trained[name] = (sum(replies), p_question)
    print(f"{name:12}: {sum(replies)} of {len(questions)} replies right; p('W' after <|user|>) = {p_question:.3f}")
assert trained["masked"][0] == len(questions) and trained["every token"][0] == len(questions)
assert trained["every token"][1] > 0.9  # it learned to write the user's question
assert trained["masked"][1] < 0.2  # it was never asked to
print("lesson 24 ok: the template, the mask, the masked loss and its gradient, and what it does not teach")
