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
# Below, a small GPT learns a short text for a few seconds; then the same prompt is continued each way.

# %%
import torch

from lucidlm.decode import SamplingConfig, filter_logits
from lucidlm.generate import generate_ids
from lucidlm.model import GPT, GPTConfig
from lucidlm.tokenizers import CharTokenizer

text = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n"
) * 20
tokenizer = CharTokenizer.train([text])
data = torch.tensor(tokenizer.encode(text))
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=48))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
for _ in range(200):
    starts = torch.randint(0, len(data) - 65, (8,))
    x = torch.stack([data[s : s + 64] for s in starts])
    y = torch.stack([data[s + 1 : s + 65] for s in starts])
    loss = model(x, y)[1]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()
print(f"trained 200 steps, loss {loss.item():.3f}\n")
prompt = tokenizer.encode("JULIET:\nO ")


def continue_with(config: SamplingConfig, seed: int = 0) -> str:
    generator = torch.Generator().manual_seed(seed)
    return tokenizer.decode(generate_ids(model, prompt, 40, config, generator))


for label, config in [
    ("greedy", SamplingConfig(temperature=0)),
    ("T = 0.5", SamplingConfig(temperature=0.5)),
    ("T = 2.0", SamplingConfig(temperature=2.0)),
    ("top-k 3", SamplingConfig(top_k=3)),
    ("top-p 0.9", SamplingConfig(top_p=0.9)),
]:
    print(f"{label:9} | O {continue_with(config)!r}")

greedy = continue_with(SamplingConfig(temperature=0))
assert greedy.startswith("Romeo, Romeo, wherefore art thou Romeo?")
assert continue_with(SamplingConfig(top_k=1), seed=1) == greedy  # top-1 sampling is greedy
assert continue_with(SamplingConfig(temperature=1.0), seed=7) == continue_with(SamplingConfig(temperature=1.0), seed=7)

# %% [markdown]
# ## What top-k and top-p keep
# On one real next-token distribution: top-k keeps a fixed number of tokens; top-p keeps as many as needed to
# cover probability $p$: few when the model is sure, many when it is not.

# %%
with torch.no_grad():
    logits = model(torch.tensor([tokenizer.encode("ROMEO:\nBut s")]))[0][:, -1]
probabilities = logits.softmax(-1)[0]
for config in (SamplingConfig(top_k=3), SamplingConfig(top_p=0.5), SamplingConfig(top_p=0.99)):
    kept = torch.isfinite(filter_logits(logits, config))[0]
    print(f"{config}: keeps {int(kept.sum())} tokens holding {probabilities[kept].sum():.3f} of the probability")
kept = torch.isfinite(filter_logits(logits, SamplingConfig(top_p=0.9)))[0]
assert probabilities[kept].sum() >= 0.9
smaller = probabilities[kept].sum() - probabilities[kept].min()
assert smaller < 0.9  # and no token could be dropped: it is the smallest such set
assert int(torch.isfinite(filter_logits(logits, SamplingConfig(top_k=3)))[0].sum()) == 3
print("lesson 18 ok: greedy, temperature, top-k and top-p, on a trained model")
