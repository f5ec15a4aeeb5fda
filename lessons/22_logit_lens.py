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
# Below, a 4-layer GPT trains for a few seconds on sentences from a small grammar, and the lens is read by
# hand through the model's hook points (`run_with_cache`, the names TransformerLens uses), then checked
# against `lucidlm lens logit`'s numbers.

# %%
import random
from itertools import pairwise

import torch

from lucidlm.lens import logit_lens
from lucidlm.model import GPT, GPTConfig

random.seed(0)
torch.manual_seed(0)
subjects, verbs, places = ["the cat", "a dog", "the bird", "my fox"], ["sat", "ran", "slept"], ["mat", "tree", "bed"]
text = " ".join(
    f"{random.choice(subjects)} {random.choice(verbs)} on the {random.choice(places)}." for _ in range(3000)
)
vocabulary = sorted(set(text))
data = torch.tensor([vocabulary.index(ch) for ch in text])
config = GPTConfig(vocab_size=len(vocabulary), block_size=64, n_layer=4, n_head=2, n_embd=64)
model = GPT(config)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
windows = data[: len(data) // 65 * 65].view(-1, 65)  # the text cut into windows of 64 + 1 characters
for _ in range(300):
    batch = windows[torch.randint(0, len(windows), (16,))]
    loss = model(batch[:, :-1], batch[:, 1:])[1]  # each character predicts the next
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"trained 300 steps: loss {loss.item():.3f} nats per character")
assert loss.item() < 0.8  # the grammar leaves little to guess: a word's letters, then its successor

# %% [markdown]
# The residual stream before the first block (`blocks.0.hook_resid_pre`, the embeddings) and after each block
# (`blocks.{l}.hook_resid_post`) comes out of one forward pass, and each is read through `ln_f` and `lm_head`.

# %%
model.eval()
prompt = "the bird ran on the tree. my fox slept on the mat."
ids = torch.tensor([[vocabulary.index(ch) for ch in prompt]])
names = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(config.n_layer)]
with torch.no_grad():
    logits, cache = model.run_with_cache(ids, names)
    readings = [model.lm_head(model.transformer.ln_f(cache[name])) for name in names]  # each (1, T, V)
assert torch.allclose(readings[-1], logits, atol=1e-5)  # after the last layer, the lens is the output

output = logits[0].log_softmax(-1)  # (T, V)
kl = [(output.exp() * (output - reading[0].log_softmax(-1))).sum(-1).mean().item() for reading in readings]
for name, value in zip(["embeddings", *(f"layer {layer}" for layer in range(config.n_layer))], kl, strict=True):
    print(f"{name:>10}: KL to the output {value:.4f} nats")
assert all(earlier > later for earlier, later in pairwise(kl))  # the readings come closer layer by layer
assert abs(kl[-1]) < 1e-6

# %% [markdown]
# Where does the model make up its mind? Follow the characters after "on the ": the grammar says a place comes
# next. At each layer, the lens's top guess for the character after each position:

# %%
lens = logit_lens(model, ids[0].tolist(), top=1)
assert all(
    abs(a - b) < 1e-5 for a, b in zip(lens["kl_to_output"], kl, strict=True)
)  # `lucidlm lens logit` reads the same
shown = slice(prompt.index("on the m"), len(prompt))
print("position:  " + "".join(f"{ch!r:>5}" for ch in prompt[shown]))
for layer, tops in zip(lens["layers"], lens["top_tokens"], strict=True):
    print(f"{layer:>10}: " + "".join(f"{vocabulary[t[0]]!r:>5}" for t in tops[shown]))
probability = [sum(p) / len(p) for p in lens["prediction_probability"]]
print("the final guess's mean probability, layer by layer:", " ".join(f"{p:.2f}" for p in probability))
assert probability[-1] > probability[0]  # the embeddings alone rarely hold the answer; the last layer does

# %% [markdown]
# The embeddings' row guesses each character itself: this GPT ties its unembedding to its embedding, so a
# token's own vector reads out as that token. The first block already moves most positions to the right next
# character; the later ones settle what the first could not, such as which place follows "on the ".

print("lesson 22 ok: the last layer's lens is the output, and the lens's KL to it falls layer by layer")
