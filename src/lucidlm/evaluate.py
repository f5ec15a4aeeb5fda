"""The loss over a whole split: every token scored exactly once, each with up to `block_size` tokens of context.

The split is cut into consecutive windows of `block_size` tokens; the last window is moved back so that it ends
at the last token, and only its targets that no earlier window scored are counted. This is the number to
compare between models; the trainer's periodic estimate uses a few random batches instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lucidlm.device import autocast
from lucidlm.model import GPT


@torch.inference_mode()
def split_loss(model: GPT, tokens: np.ndarray, batch_size: int = 32) -> tuple[float, int]:
    """(mean cross-entropy in nats per token, number of tokens scored) over `tokens`."""
    T = model.config.block_size
    device = model.lm_head.weight.device
    n_targets = len(tokens) - 1
    if n_targets < 1:
        raise ValueError("a split needs at least two tokens to score one")
    starts = list(range(0, n_targets, T))
    total, count = 0.0, 0
    for first in range(0, len(starts), batch_size):
        group = starts[first : first + batch_size]
        # A window starting at s scores targets s+1 .. s+T; the last one is shifted back to stay in range.
        shifted = [min(s, max(n_targets - T, 0)) for s in group]
        length = min(T, n_targets)
        index = np.asarray(shifted)[:, None] + np.arange(length + 1)
        window = torch.from_numpy(tokens[index].astype(np.int64)).to(device)
        x, y = window[:, :-1], window[:, 1:]
        skip = torch.tensor([s - w for s, w in zip(group, shifted, strict=True)], device=device)
        # Targets a previous window already scored get the ignore index -1.
        y = torch.where(torch.arange(length, device=device)[None, :] < skip[:, None], -1, y)
        with autocast(device):
            logits, _ = model(x)
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1, reduction="sum"
        )
        total += losses.item()
        count += int((y >= 0).sum())
    return total / count, count
