"""A recipe that fits the machine and the budget: the depth a time-budgeted run trains.

A preset tuned where a step costs 100 ms takes a quarter of its steps where a step costs 400 ms, and lands far
from its figure. So a run with a time budget and `recipe=auto` (the shakespeare-char preset's) measures what
it runs on: a few training steps of each depth on the dial (scaling.depth_shape), in the dtype and on the
device it will train with, before the clock starts. The tokens each depth would see in the budget go into the
scaling law fitted to Tiny Shakespeare with `lucidlm scale` (SHAKESPEARE_LAW), and the depth with the lowest
predicted loss is trained: a smaller model where the machine is slow, a larger one where it is fast. With a
`target_loss` (`make demo`'s promise), a machine too slow to reach it in the budget trains for longer, as long
as the law says the target takes, and says so. The choice is a pure function of (measured speeds, budget, data
size, target): scaling.choose_depth.

Explicit settings win: a run whose n_layer, n_embd or n_head is set in a TOML file or by --set keeps them.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from lucidlm.device import pick_device
from lucidlm.run_config import RunConfig
from lucidlm.scaling_law import DepthChoice, ScalingLaw, choose_depth, count_parameters, with_depth
from lucidlm.train.backends import TorchBackend
from lucidlm.train.distributed import Distributed

# Fitted by `lucidlm scale` on Tiny Shakespeare as char tokens, with the preset's layout, optimizer and learning
# rates (benchmarks/scaling_law.py; docs/benchmarks.md, "A scaling law for the shakespeare-char recipe").
SHAKESPEARE_LAW = ScalingLaw(E=1.2771, A=126.88, alpha=0.5200, B=13003.3, beta=0.7801)
DEPTHS = (2, 3, 4, 5, 6, 8, 10, 12)
MEASURED_STEPS = 3  # timed steps per depth, after one that warms the caches
SIZE_SETTINGS = ("n_layer", "n_embd", "n_head", "n_kv_head", "head_dim", "mlp_hidden")  # set: no recipe


def measure_tokens_per_second(config: RunConfig, depth: int, device: torch.device) -> float:
    """Training tokens/s of one depth on this machine: a few eager steps on random tokens, in the run's dtype."""
    model = with_depth(config.model, depth)
    train = replace(config.train, compile="false", lora_rank=0)
    backend = TorchBackend(RunConfig(model, train), device, Distributed())
    ids = torch.randint(0, model.vocab_size, (train.batch_size, model.block_size + 1), device=device)
    batch = (ids[:, :-1], ids[:, 1:])
    backend.train_step([batch], 0.0, 0.0)
    started = time.perf_counter()
    for _ in range(MEASURED_STEPS):
        backend.train_step([batch], 0.0, 0.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return MEASURED_STEPS * train.batch_size * model.block_size / (time.perf_counter() - started)


def fit_to_machine(config: RunConfig, data_tokens: int, law: ScalingLaw = SHAKESPEARE_LAW) -> tuple[RunConfig, dict]:
    """The run's config with the depth the law predicts best for its budget on this machine, and what was
    measured and why (for the log and config.json). Depths are measured from the smallest up, and measuring
    stops once two in a row predict a higher loss than the best so far."""
    device = pick_device(config.train.device)
    started = time.perf_counter()
    speeds: dict[int, float] = {}
    parameters: dict[int, int] = {}
    best, worse = None, 0
    for depth in DEPTHS:
        parameters[depth] = count_parameters(with_depth(config.model, depth))
        speeds[depth] = measure_tokens_per_second(config, depth, device)
        choice = choose_depth(law, parameters, speeds, config.train.time_budget, data_tokens, config.train.target_loss)
        worse = worse + 1 if best is not None and choice.depth == best.depth else 0
        best = choice
        if worse == 2:
            break
    chosen = replace(
        config, model=with_depth(config.model, best.depth), train=replace(config.train, time_budget=best.seconds)
    )
    return chosen, recipe_note(best, speeds, time.perf_counter() - started)


def recipe_note(choice: DepthChoice, speeds: dict[int, float], seconds: float) -> dict:
    return {
        "depth": choice.depth,
        "parameters": choice.parameters,
        "seconds": round(choice.seconds, 1),
        "tokens": round(choice.tokens),
        "predicted_val_loss": round(choice.predicted_loss, 4),
        "measured_tokens_per_second": {str(depth): round(speed) for depth, speed in speeds.items()},
        "measuring_seconds": round(seconds, 1),
        "why": choice.why,
    }
