# %% [markdown]
# # Lesson 19: the KV cache
#
# Generating token $t + 1$ needs the model's output at position $t$, which depends on the keys and values of
# positions $1 \dots t$. Those do not change when a new token is appended (the causal mask, lesson 12), so
# recomputing them every step is waste. A **KV cache** stores each layer's keys and values; each new step runs
# only the newest token through the model and attends over the stored ones.
#
# Work for $n$ new tokens after a prompt of $p$, with $N$ parameters: without a cache step $t$ processes all
# $t$ tokens, about $2N \cdot t$ FLOPs, $\sum_t 2Nt \approx N (p + n)^2$ in all; with the cache each step costs about
# $2N$ plus attention over $t$ cached positions, $\approx 2Nn$ in all. Below, PyTorch's FLOP counter counts both.

# %%
import torch
from torch.utils.flop_counter import FlopCounterMode

from lucidlm.decode import SamplingConfig
from lucidlm.generate import generate_ids
from lucidlm.model import GPT, GPTConfig

torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=65, block_size=256, n_layer=4, n_head=4, n_embd=128)).eval()
prompt, new = list(range(8)), 120


@torch.no_grad()
def without_cache() -> list[int]:
    tokens = list(prompt)
    for _ in range(new):
        logits, _ = model(torch.tensor([tokens]))  # the whole sequence, every step
        tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


def with_cache() -> list[int]:
    return list(generate_ids(model, prompt, new, SamplingConfig(temperature=0)))


counts = {}
for name, function in (("without cache", without_cache), ("with KV cache", with_cache)):
    with FlopCounterMode(display=False) as counter:
        tokens = function()
    counts[name] = (counter.get_total_flops(), tokens)
    print(f"{name:14}: {counter.get_total_flops() / 1e9:6.2f} GFLOPs for {new} tokens")
(slow_flops, slow_tokens), (fast_flops, fast_tokens) = counts["without cache"], counts["with KV cache"]
assert slow_tokens == fast_tokens  # the same text
print(f"same tokens: {slow_tokens == fast_tokens}; the cache does {slow_flops / fast_flops:.1f}x less work")
assert slow_flops > 10 * fast_flops

# %% [markdown]
# The price is memory: for every layer and every position, a key and a value of $n_{kv} \cdot D$ numbers.
# Grouped-query attention (lesson 13) shrinks exactly this.

# %%
cache = model.new_cache(batch_size=1)
per_token = 2 * model.config.n_layer * model.config.n_kv_head * model.config.head_dim
assert cache.numel() == per_token * model.config.block_size
print(f"cache: {per_token} numbers per token, {cache.numel() * 4 / 1024:.0f} KiB for the whole window")
print("lesson 19 ok: same tokens, far fewer FLOPs")
