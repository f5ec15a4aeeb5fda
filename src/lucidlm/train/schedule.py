"""Learning rate: linear warmup, then cosine decay from `lr` to `min_lr`.

The decay runs over `decay_steps` (default `max_steps`), or over the time budget when one is set, whichever
ends first, so a run that is stopped by the clock still ends at `min_lr`.
"""

from __future__ import annotations

import math

from lucidlm.config import TrainConfig


def learning_rate(step: int, elapsed: float, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    decay_steps = config.decay_steps or config.max_steps
    progress = (step - config.warmup_steps) / max(decay_steps - config.warmup_steps, 1)
    if config.time_budget is not None:
        progress = max(progress, elapsed / config.time_budget)
    progress = min(progress, 1.0)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)
