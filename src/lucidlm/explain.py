"""The forward pass with every intermediate kept, at one position: what the explainer page shows.

`explain(model, ids, position)` runs the model's own modules in the order `GPT.forward` runs them, keeping what
happens on the way: the token's embedding and its position's, and for each layer the normalised input, every
head's query, its scores before the mask and softmax and its weights after, the heads' outputs, the MLP's
activations, and the residual stream; then the final norm and the logits. Everything is taken at `position`,
except one head's attention weights at every position, which the explainer draws as a heatmap.

`lucidlm serve`'s explainer (/explain) takes its numbers from here; the exported page (`export --format web`)
computes the same ones in JavaScript, and tests/web holds the two equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lucidlm.model import GPT


def listed(tensor: torch.Tensor) -> list:
    """A tensor as (nested) lists of floats, with -inf (a masked score) as None, which JSON can carry."""

    def finite(value):
        return [finite(v) for v in value] if isinstance(value, list) else None if value == -math.inf else value

    return finite(tensor.float().tolist())


@torch.inference_mode()
def explain(model: GPT, ids: list[int], position: int, layer: int = 0, head: int = 0) -> dict:
    """The intermediates of the forward pass over `ids` (at most block_size of them) at `position`, and the
    attention weights of every position for one `layer` and `head` (the heatmap)."""
    config = model.config
    T, H, K, D = len(ids), config.n_head, config.n_kv_head, config.head_dim
    if not 0 <= position < T <= config.block_size:
        raise ValueError(f"position {position} is outside the {T} tokens (at most block_size={config.block_size})")
    if not (0 <= layer < config.n_layer and 0 <= head < H):
        raise ValueError(f"there is no head {head} in layer {layer}: the model has {config.n_layer} layers of {H}")
    idx = torch.tensor([ids], device=model.lm_head.weight.device)
    positions = torch.arange(T, device=idx.device)
    token = model.transformer.wte(idx)  # (1, T, C)
    added, rope = None, None
    if config.positions == "learned":
        added = model.transformer.wpe(positions)[None]
    elif config.positions == "sinusoidal":
        added = model.sinusoid[positions][None]
    else:
        rope = (model.rope_cos[positions], model.rope_sin[positions])
    x = token if added is None else token + added
    layers, residual, heatmap = [], [x[0, position]], None
    for block in model.transformer.h:
        ln_1 = block.ln_1(x)
        q, k, v = block.attn.queries_keys_values(ln_1, rope)  # (1, H, T, D), (1, K, T, D) twice
        scores = block.attn.masked_scores(q, k, None)  # (1, H, T, T)
        weights = F.softmax(scores, dim=-1)
        if len(layers) == layer:
            heatmap = {"layer": layer, "head": head, "weights": listed(weights[0, head])}  # (T, T)
        v = v.repeat_interleave(H // K, dim=1)
        heads = (weights @ v).transpose(1, 2).reshape(1, T, H * D)  # (1, T, H * D): side by side
        attended = block.attn.c_proj(heads)
        x = x + attended
        after_attention = x
        ln_2 = block.ln_2(x)
        activations = block.mlp.activation(block.mlp.c_fc(ln_2))
        out = block.mlp.c_proj(activations)
        x = x + out
        residual.append(x[0, position])
        layers.append(
            {
                "ln_1": listed(ln_1[0, position]),
                "q": listed(q[0, :, position]),  # (H, D)
                "scores": listed(scores[0, :, position]),  # (H, T): masked positions are None
                "weights": listed(weights[0, :, position]),  # (H, T)
                "heads": listed(heads[0, position]),  # (H * D)
                "attention": listed(attended[0, position]),
                "after_attention": listed(after_attention[0, position]),
                "ln_2": listed(ln_2[0, position]),
                "activations": listed(activations[0, position]),
                "mlp": listed(out[0, position]),
            }
        )
    ln_f = model.transformer.ln_f(x)
    logits = model.lm_head(ln_f)  # (1, T, V)
    return {
        "ids": ids,
        "position": position,
        "token_embedding": listed(token[0, position]),
        "position_embedding": None if added is None else listed(added[0, position]),
        "layers": layers,
        "heatmap": heatmap,
        "residual_norms": [float(r.float().norm()) for r in residual],
        "ln_f": listed(ln_f[0, position]),
        "logits": listed(logits[0, position]),
    }
