"""The analyses: each reads or changes the forward pass through its hook points and returns a typed result
(results.py). Shapes: L layers, H heads, T positions, V the vocabulary."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lucidlm.lens.results import Ablation, Attribution, HeadScores, LogitLens, Patching
from lucidlm.model import GPT


def ids_tensor(model: GPT, ids: list[int]) -> torch.Tensor:
    """(1, T) on the model's device, after checking the ids fit the model."""
    config = model.config
    if not 0 < len(ids) <= config.block_size:
        raise ValueError(f"give 1 to {config.block_size} tokens (block_size), not {len(ids)}")
    if not all(0 <= i < config.vocab_size for i in ids):
        raise ValueError(f"token ids must lie in [0, {config.vocab_size})")
    return torch.tensor([ids], device=model.lm_head.weight.device)


def residual_names(model: GPT) -> list[str]:
    """The residual stream before the first layer and after each layer: L + 1 hook points."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(model.config.n_layer)]


def read_out(model: GPT, residual: torch.Tensor) -> torch.Tensor:
    """Logits from a residual stream (..., C): the final norm, then the unembedding."""
    return model.lm_head(model.transformer.ln_f(residual))


@torch.inference_mode()
def logit_lens(model: GPT, ids: list[int], top: int = 5) -> LogitLens:
    """For each of the L + 1 readings (after the embeddings, after each layer) and each position: the `top`
    tokens and their probabilities, and the probability and rank of the model's final prediction there; and
    each reading's mean KL divergence from the model's output, in nats."""
    if top < 1:
        raise ValueError(f"top must be at least 1 (the tokens listed per layer and position), not {top}")
    names = residual_names(model)
    logits, cache = model.run_with_cache(ids_tensor(model, ids), names)
    final = logits[0].float().log_softmax(-1)  # (T, V)
    predicted = final.argmax(-1)  # (T,) the model's own next token at each position
    readings = torch.stack([read_out(model, cache[name][0]).float().log_softmax(-1) for name in names])  # (L+1,T,V)
    probabilities, tokens = readings.exp().topk(min(top, readings.shape[-1]), dim=-1)  # (L+1, T, top)
    chosen = readings.gather(-1, predicted.expand(len(names), -1)[..., None])[..., 0]  # (L+1, T)
    rank = (readings > chosen[..., None]).sum(-1)  # 0 where the final prediction leads
    kl = (final.exp() * (final - readings)).sum(-1).mean(-1)  # KL(output || reading), averaged over positions
    return LogitLens(
        layers=["embeddings", *(f"layer {layer}" for layer in range(model.config.n_layer))],
        top_tokens=tokens.tolist(),
        top_probabilities=probabilities.tolist(),
        prediction=predicted.tolist(),
        prediction_probability=chosen.exp().tolist(),
        prediction_rank=rank.tolist(),
        kl_to_output=kl.tolist(),
    )


def repeated_tokens(vocab_size: int, width: int, lengths: list[int], generator: torch.Generator) -> torch.Tensor:
    """(len(lengths), width) random tokens, row r's first lengths[r] of them repeated right after themselves:
    the data on which induction heads show (and grow), since nothing in it can be predicted but the repeat."""
    if not all(1 <= n <= width // 2 for n in lengths):
        raise ValueError(f"each repeated length must lie in 1..{width // 2} (half of the width)")
    ids = torch.randint(0, vocab_size, (len(lengths), width), generator=generator)
    for row, n in enumerate(lengths):
        ids[row, n : 2 * n] = ids[row, :n]
    return ids


@torch.inference_mode()
def head_scores(model: GPT, length: int | None = None, batch: int = 4, seed: int = 0) -> HeadScores:
    """Previous-token, duplicate-token and induction scores (L, H) on `batch` sequences of `length` random
    tokens followed by the same tokens again (at most block_size in all): `attention_scores` on
    `repeated_tokens`."""
    config = model.config
    length = length or min(50, config.block_size // 2)
    if not 2 <= length <= config.block_size // 2:
        raise ValueError(f"length must lie in 2..{config.block_size // 2} (half of block_size)")
    generator = torch.Generator().manual_seed(seed)
    ids = repeated_tokens(config.vocab_size, 2 * length, [length] * batch, generator)  # (B, 2 * length)
    return HeadScores(**attention_scores(model, ids.tolist(), length), length=length, batch=batch)


@torch.inference_mode()
def attention_scores(model: GPT, rows: list[list[int]], length: int) -> dict[str, list[list[float]]]:
    """Each head's mean attention (L, H), over the rows (B, 2 * length: tokens, then the same again) and the
    repeated half's positions i, to one place: i - 1 (the previous token), i - length (the same token's first
    copy), i - length + 1 (the token after that copy, the induction score)."""
    ids = torch.tensor(rows, device=model.lm_head.weight.device)  # (B, 2 * length)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.config.n_layer)]
    _, cache = model.run_with_cache(ids, names)
    pattern = torch.stack([cache[name].float() for name in names])  # (L, B, H, T, T)
    queries = torch.arange(length, 2 * length, device=ids.device)

    def mean_attention(offset: int) -> torch.Tensor:
        return pattern[:, :, :, queries, queries - offset].mean(dim=(1, 3))  # (L, H)

    return {
        "previous_token": mean_attention(1).tolist(),
        "duplicate_token": mean_attention(length).tolist(),
        "induction": mean_attention(length - 1).tolist(),
    }


def mean_loss(model: GPT, ids: torch.Tensor, hooks: dict) -> float:
    logits = model.run_with_hooks(ids[:, :-1], hooks)
    return float(F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()))


@torch.inference_mode()
def ablation(model: GPT, ids: list[int], kind: str = "zero") -> Ablation:
    """The loss over `ids` with nothing removed, and the loss each head (L, H) and each MLP (L,) adds when its
    output is replaced by zeros (`zero`) or by its mean over the text's positions (`mean`)."""
    if kind not in ("zero", "mean"):
        raise ValueError(f"ablation {kind!r} is not one of: zero, mean")
    tokens = ids_tensor(model, ids)
    if tokens.shape[1] < 2:
        raise ValueError("ablation needs at least 2 tokens: one to predict")
    config = model.config
    base = mean_loss(model, tokens, {})
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(config.n_layer)]
    mlp_names = [f"blocks.{layer}.hook_mlp_out" for layer in range(config.n_layer)]
    _, cache = model.run_with_cache(tokens[:, :-1], z_names + mlp_names)

    def replacement(activation: torch.Tensor, name: str) -> torch.Tensor:
        if kind == "zero":
            return torch.zeros_like(activation)
        return cache[name].mean(dim=1, keepdim=True).expand_as(activation)  # the mean over positions

    def remove_head(head: int):
        def hook(z: torch.Tensor, name: str) -> torch.Tensor:
            z = z.clone()
            z[:, :, head] = replacement(z, name)[:, :, head]
            return z

        return hook

    heads = [
        [mean_loss(model, tokens, {z_names[layer]: remove_head(head)}) - base for head in range(config.n_head)]
        for layer in range(config.n_layer)
    ]
    mlps = [mean_loss(model, tokens, {name: replacement}) - base for name in mlp_names]
    return Ablation(kind=kind, loss=base, heads=heads, mlps=mlps)


@torch.inference_mode()
def direct_logit_attribution(
    model: GPT, ids: list[int], position: int, token: int, other: int | None = None
) -> Attribution:
    """Each component's direct contribution to the logit of `token` (minus that of `other`, when given) at
    `position`: the embeddings, each head (L, H) through its slice of the output projection, each MLP, and the
    biases, each divided by the final norm's scale at that position as the pass computed it (and centred, for
    LayerNorm). They add up to the logit (difference), `total`, to float rounding."""
    tokens = ids_tensor(model, ids)
    config = model.config
    if not 0 <= position < tokens.shape[1]:
        raise ValueError(f"position {position} is outside the {tokens.shape[1]} tokens")
    for name, value in (("token", token), ("other", other)):
        if value is not None and not 0 <= value < config.vocab_size:
            raise ValueError(f"{name} {value} is outside the vocabulary [0, {config.vocab_size})")
    names = ["blocks.0.hook_resid_pre", *(f"blocks.{layer}.attn.hook_z" for layer in range(config.n_layer))]
    names += [f"blocks.{layer}.hook_mlp_out" for layer in range(config.n_layer)]
    names.append(f"blocks.{config.n_layer - 1}.hook_resid_post")
    logits, cache = model.run_with_cache(tokens, names)
    norm = model.transformer.ln_f
    residual = cache[names[-1]][0, position].float()  # (C,)
    centred = isinstance(norm, torch.nn.LayerNorm)
    if centred:
        scale = (residual.var(unbiased=False) + norm.eps).sqrt()
    else:
        eps = norm.eps if norm.eps is not None else torch.finfo(residual.dtype).eps
        scale = (residual.square().mean() + eps).sqrt()
    direction = model.lm_head.weight[token].float() * norm.weight.float()  # (C,)
    if other is not None:
        direction = direction - model.lm_head.weight[other].float() * norm.weight.float()

    def through_norm(vector: torch.Tensor) -> float:
        vector = vector.float()
        if centred:
            vector = vector - vector.mean()
        return float(vector @ direction / scale)

    heads = []
    for layer, block in enumerate(model.transformer.h):
        z = cache[f"blocks.{layer}.attn.hook_z"][0, position]  # (H, D)
        weight = block.attn.c_proj.weight.view(config.n_embd, config.n_head, config.head_dim)  # (C, H, D)
        heads.append([through_norm(weight[:, head] @ z[head]) for head in range(config.n_head)])
    mlps = [through_norm(cache[f"blocks.{layer}.hook_mlp_out"][0, position]) for layer in range(config.n_layer)]
    embeddings = through_norm(cache["blocks.0.hook_resid_pre"][0, position])
    attention_biases = sum(
        (block.attn.c_proj.bias for block in model.transformer.h if block.attn.c_proj.bias is not None),
        torch.zeros(config.n_embd, device=residual.device),
    )
    bias = through_norm(attention_biases)
    if getattr(norm, "bias", None) is not None:  # the final LayerNorm's own bias (the output layer has none)
        bias_direction = model.lm_head.weight[token] - (model.lm_head.weight[other] if other is not None else 0)
        bias += float(norm.bias.float() @ bias_direction.float())
    final = logits[0, position].float()
    total = float(final[token] - (final[other] if other is not None else 0))
    return Attribution(
        token=token,
        other=other,
        position=position,
        embeddings=embeddings,
        heads=heads,
        mlps=mlps,
        biases=bias,
        total=total,
    )


@torch.inference_mode()
def patching(model: GPT, clean: list[int], corrupted: list[int], answer: int, wrong: int) -> Patching:
    """How much of the clean run's logit difference (answer - wrong, at the last position) each patch brings
    back into the corrupted run: the residual stream before each layer at each position (L, T), and each
    head's output at every position (L, H). 1 is the clean difference, 0 the corrupted one."""
    if len(clean) != len(corrupted):
        raise ValueError(
            f"the clean and corrupted prompts must be of equal length, not {len(clean)} and {len(corrupted)}"
        )
    clean_ids, corrupted_ids = ids_tensor(model, clean), ids_tensor(model, corrupted)
    config = model.config

    def difference(logits: torch.Tensor) -> float:
        last = logits[0, -1].float()
        return float(last[answer] - last[wrong])

    resid = [f"blocks.{layer}.hook_resid_pre" for layer in range(config.n_layer)]
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(config.n_layer)]
    clean_logits, clean_cache = model.run_with_cache(clean_ids, resid + z_names)
    clean_difference, corrupted_difference = difference(clean_logits), difference(model(corrupted_ids)[0])
    gap = clean_difference - corrupted_difference
    if math.isclose(gap, 0.0, abs_tol=1e-9):
        raise ValueError("the clean and corrupted prompts give the same logit difference: nothing to restore")

    def restored(hooks: dict) -> float:
        return (difference(model.run_with_hooks(corrupted_ids, hooks)) - corrupted_difference) / gap

    def patch(name: str, index: tuple):
        def hook(activation: torch.Tensor, _: str) -> torch.Tensor:
            activation = activation.clone()
            activation[index] = clean_cache[name][index]
            return activation

        return hook

    positions = range(len(clean))
    residual = [[restored({name: patch(name, (slice(None), p))}) for p in positions] for name in resid]
    heads = [
        [restored({name: patch(name, (slice(None), slice(None), h))}) for h in range(config.n_head)] for name in z_names
    ]
    return Patching(
        clean_difference=clean_difference, corrupted_difference=corrupted_difference, residual=residual, heads=heads
    )
