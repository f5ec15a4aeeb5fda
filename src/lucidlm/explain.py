"""The forward pass with every intermediate kept, at one position: what the explainer page shows.

`explain(model, ids, position)` runs the model once with every hook point cached (`GPT.run_with_cache`) and
takes, at `position`: the token's embedding and its position's, and for each layer the normalised input, every
head's query, its scores before the softmax and its weights after, the heads' outputs, the MLP's activations,
and the residual stream; then the final norm and the logits. One head's attention weights are kept at every
position, which the explainer draws as a heatmap.

`lucidlm serve`'s explainer (/explain) takes its numbers from here; the exported page (`export --format web`)
computes the same ones in JavaScript, and tests/web holds the two equal.
"""

from __future__ import annotations

import math

import torch

from lucidlm.lens import read_out
from lucidlm.model import GPT


def listed(tensor: torch.Tensor) -> list:
    """A tensor as (nested) lists of floats, with -inf (a masked score) as None, which JSON can carry."""

    def finite(value):
        return [finite(v) for v in value] if isinstance(value, list) else None if value == -math.inf else value

    return finite(tensor.float().tolist())


def position_lens(model: GPT, streams: list[torch.Tensor]) -> dict:
    """The logit lens at one position: each stream (after the embeddings, after each layer) read through the
    final norm and the unembedding; the token each reading would pick, and its probability."""
    probabilities, tokens = torch.stack([read_out(model, s).float().softmax(-1) for s in streams]).max(-1)
    return {"tokens": tokens.tolist(), "probabilities": probabilities.tolist()}


@torch.inference_mode()
def explain(model: GPT, ids: list[int], position: int, layer: int = 0, head: int = 0) -> dict:
    """The intermediates of the forward pass over `ids` (at most block_size of them) at `position`, and the
    attention weights of every position for one `layer` and `head` (the heatmap)."""
    config = model.config
    T, H = len(ids), config.n_head
    if not 0 <= position < T <= config.block_size:
        raise ValueError(f"position {position} is outside the {T} tokens (at most block_size={config.block_size})")
    if not (0 <= layer < config.n_layer and 0 <= head < H):
        raise ValueError(f"there is no head {head} in layer {layer}: the model has {config.n_layer} layers of {H}")
    idx = torch.tensor([ids], device=model.lm_head.weight.device)
    logits, cache = model.run_with_cache(idx)
    at = {name: activation[0] for name, activation in cache.items()}  # the one sequence
    rotated = "blocks.0.attn.hook_rot_q" in at  # the queries that meet the keys: after QK-norm and RoPE
    layers, heatmap = [], None
    for n in range(config.n_layer):
        prefix = f"blocks.{n}."
        block = {name.removeprefix(prefix): activation for name, activation in at.items() if name.startswith(prefix)}
        weights = block["attn.hook_pattern"]  # (H, T, T)
        if n == layer:
            heatmap = {"layer": layer, "head": head, "weights": listed(weights[head])}
        layers.append(
            {
                "ln_1": listed(model.transformer.h[n].ln_1(block["hook_resid_pre"][position])),  # gain applied
                "q": listed(block["attn.hook_rot_q" if rotated else "attn.hook_q"][position]),  # (H, D)
                "scores": listed(block["attn.hook_attn_scores"][:, position]),  # (H, T): masked ones None
                "weights": listed(weights[:, position]),  # (H, T)
                "heads": listed(block["attn.hook_z"][position].flatten()),  # (H * D): side by side
                "attention": listed(block["hook_attn_out"][position]),
                "after_attention": listed(block["hook_resid_mid"][position]),
                "ln_2": listed(model.transformer.h[n].ln_2(block["hook_resid_mid"][position])),
                "activations": listed(block["mlp.hook_post"][position]),
                "mlp": listed(block["hook_mlp_out"][position]),
            }
        )
    residual = [at["blocks.0.hook_resid_pre"]] + [at[f"blocks.{n}.hook_resid_post"] for n in range(config.n_layer)]
    position_embedding = at.get("hook_pos_embed")
    return {
        "ids": ids,
        "position": position,
        "token_embedding": listed(at["hook_embed"][position]),
        "position_embedding": None if position_embedding is None else listed(position_embedding[position]),
        "layers": layers,
        "heatmap": heatmap,
        "residual_norms": [float(r[position].float().norm()) for r in residual],
        "lens": position_lens(model, [r[position] for r in residual]),
        "ln_f": listed(model.transformer.ln_f(residual[-1][position])),
        "logits": listed(logits[0, position]),
    }
