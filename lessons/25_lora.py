# %% [markdown]
# # Lesson 25: LoRA, fine-tuning through a low-rank update
#
# Fine-tuning every weight of a large model needs memory for every weight's gradient and optimizer state.
# LoRA (Hu et al., 2021) freezes the model and learns, for a chosen layer with weight $W$ (out, in), two thin
# matrices $A$ ($r \times$ in) and $B$ (out $\times r$), so that the layer computes
#
# $$y = x W^\top + \frac{\alpha}{r}\, (x A^\top) B^\top = x \Big(W + \frac{\alpha}{r} B A\Big)^\top$$
#
# The update $\Delta W = \frac{\alpha}{r} B A$ has rank at most $r$, and its $r(\text{in} + \text{out})$ numbers
# are few beside $W$'s in $\times$ out. $B$ starts at zero, so training starts from the model exactly. When
# training is done, $\Delta W$ is added into $W$ ("merged"): the layer is an ordinary linear layer again, as
# fast as before, with the same outputs as the adapters gave. Below, all of it is checked on a GPT.

# %%
import torch

from lucidlm.model import GPT, GPTConfig
from lucidlm.model.lora import LoRALinear, add_lora, merge_lora

torch.manual_seed(0)
config = GPTConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=64)
model = GPT(config)
x = torch.randint(0, 40, (4, 32))
with torch.no_grad():
    base_logits = model(x)[0]

rank, alpha = 4, 8.0
trainable = add_lora(model, rank, alpha, "attn.c_attn,attn.c_proj,mlp.c_fc,mlp.c_proj")
total = sum(p.numel() for p in model.parameters())
learned = sum(p.numel() for name, p in model.named_parameters() if name in trainable)
print(f"{learned:,} of {total:,} numbers train ({learned / total:.1%}): {', '.join(trainable[:2])}, ...")
assert all(".lora_A" in name or ".lora_B" in name for name in trainable)
layer = model.transformer.h[0].mlp.c_fc
assert isinstance(layer, LoRALinear) and layer.lora_A.shape == (rank, 64) and layer.lora_B.shape == (256, rank)
with torch.no_grad():
    assert torch.equal(model(x)[0], base_logits)  # B = 0: the adapters change nothing yet

# %% [markdown]
# ## Training moves only the adapters
# A few steps of AdamW on a made-up target. The frozen weights stay bit for bit as they were; the update each
# adapted layer has learned is of rank $r$ at most (its singular values past the $r$-th are zero, up to rounding).

# %%
frozen = {name: p.detach().clone() for name, p in model.named_parameters() if name not in trainable}
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
y = torch.randint(0, 40, (4, 32))
for _ in range(30):
    loss = model(x, y)[1]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"loss after 30 steps: {loss.item():.3f}")
assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters() if name in frozen)
update = layer.merged_weight() - layer.weight  # (alpha / r) B A
singular_values = torch.linalg.svdvals(update.detach())
print(f"the update's singular values: {[round(s, 4) for s in singular_values[:6].tolist()]} ...")
assert singular_values[rank - 1] > 1e-3 and singular_values[rank] < 1e-5 * singular_values[0]

# %% [markdown]
# ## Merged, the same model
# Folding $\frac{\alpha}{r} B A$ into each $W$ leaves plain `nn.Linear` layers, and the logits agree with the
# adapters' to float rounding: this is how `lucidlm generate`, `serve` and `export` run a LoRA run.

# %%
with torch.no_grad():
    adapted_logits = model(x)[0]
    merge_lora(model)
    merged_logits = model(x)[0]
difference = (adapted_logits - merged_logits).abs().max().item()
print(f"largest difference between the adapters' and the merged model's logits: {difference:.2e}")
assert difference < 1e-4
assert not any(isinstance(m, LoRALinear) for m in model.modules())
assert not torch.allclose(merged_logits, base_logits, atol=1e-3)  # the update is there
print("lesson 25 ok: a rank-r update, frozen base, and the merged model gives the adapters' outputs")
