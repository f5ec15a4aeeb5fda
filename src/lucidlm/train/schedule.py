"""Learning rate: linear warmup, then cosine decay from `lr` to `min_lr`.

The decay runs over `decay_steps` (default `max_steps`), or over the time budget when one is set, whichever
ends first, so a run that is stopped by the clock still ends at `min_lr`. A time budget with `min_steps` runs
until both the seconds and the steps are done: on a machine too slow to take min_steps in the budget, the steps
set the pace of the decay and the end of the run.
"""

from __future__ import annotations

import math

from lucidlm.run_config import TrainConfig


def time_progress(step: int, elapsed: float, config: TrainConfig) -> float | None:
    """How far a time-budgeted run is through its budget, 1 at its end: the seconds spent over the budget, held
    back to step / min_steps on a machine that takes longer than the budget for min_steps; None without one."""
    if config.time_budget is None:
        return None
    fraction = elapsed / config.time_budget
    if config.min_steps is not None:
        fraction = min(fraction, step / config.min_steps)
    return fraction


def learning_rate(step: int, elapsed: float, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    decay_steps = config.decay_steps or config.max_steps
    progress = (step - config.warmup_steps) / max(decay_steps - config.warmup_steps, 1)
    if config.time_budget is not None:
        progress = max(progress, time_progress(step, elapsed, config))
    progress = min(progress, 1.0)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)
