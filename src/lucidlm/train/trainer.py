"""The training loop: batches in, AdamW steps, evaluations, checkpoints, metrics and a progress bar.

`train()` is what `lucidlm train` calls. The batch for each step comes from the loader as a pure function of
(seed, step), and a checkpoint holds the weights, optimizer moments, RNG state and elapsed time, so `--resume`
continues exactly where the run stopped.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lucidlm.data.loader import BatchLoader, Replayed, data_kind, is_chat_data, open_split, read_meta
from lucidlm.device import pick_device
from lucidlm.errors import STOP_SIGNALS, CheckpointError, ConfigError, LucidError, interruption
from lucidlm.evaluate import bits_per_byte, tokens_per_byte
from lucidlm.memory import keep_freed_memory
from lucidlm.run_config import RunConfig, TrainConfig
from lucidlm.runs import find_checkpoint, load_training_state, read_manifest, save_checkpoint, write_json_atomic
from lucidlm.tokenizers import load_tokenizer
from lucidlm.train import distributed
from lucidlm.train.backends import NumpyBackend, TorchBackend, make_backend
from lucidlm.train.metrics import MetricsLog
from lucidlm.train.rl import TaskLoader
from lucidlm.train.schedule import learning_rate, time_progress
from lucidlm.train.tracking import open_tracker


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    val_loss: float | None
    best_val_loss: float | None
    tokens_per_second: float
    elapsed: float  # seconds of training steps: what a time budget counts
    interrupted: int  # the signal that stopped the run early (SIGINT, SIGTERM, SIGHUP), 0 if none
    model: object  # the trained model at the last step: a lucidlm GPT, or a lucidlm.scratch GPT (NumPy backend)
    data_dir: Path | None = None  # the prepared data it trained on
    is_main: bool = True  # False in the torchrun processes other than rank 0
    compile_seconds: float = 0.0  # torch.compile's work on the blocks, before the clock started


def estimate_val_scores(
    backend: TorchBackend | NumpyBackend, loader: BatchLoader | TaskLoader, batches: int
) -> dict[str, float]:
    """The mean loss (and what the objective reports beside it) over the same `batches` validation batches every
    time, so evaluations compare (task data: over every held-out prompt)."""
    batches = loader.val_batches(batches)
    totals: dict[str, float] = {}
    for index in range(batches):
        for name, value in backend.eval_scores(loader.batch("val", index)).items():
            totals[name] = totals.get(name, 0.0) + value
    return {name: total / batches for name, total in totals.items()}


class StopRequest:
    """The first Ctrl-C (or SIGTERM) asks the loop to stop after the current step and save; a second one stops
    at once. `signal` is the one that asked (0 while none has)."""

    def __init__(self) -> None:
        self.signal = 0
        self.previous = {}

    @property
    def requested(self) -> bool:
        return self.signal != 0

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise interruption(signum)
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


# what the progress bar shows beside the loss, where an objective reports it
SHOWN_METRICS = ("reward_margin", "reward_accuracy", "reward", "kl", "replay_loss")
EVAL_PASSES = 100  # an evaluation that reads the validation split more often than this is a typo


def check_data_fits(config: RunConfig, data_dir: Path) -> None:
    if config.train.backend == "numpy" and is_chat_data(data_dir):
        raise ConfigError("the NumPy backend has no loss mask for chat data; train it with --backend torch")
    meta = read_meta(data_dir)
    batch_tokens = config.train.batch_size * config.model.block_size
    most = (EVAL_PASSES * meta["val_tokens"] + 10**6) // batch_tokens
    if config.train.eval_batches > max(most, 1) and data_kind(data_dir) != "tasks":
        raise ConfigError(
            f"eval_batches={config.train.eval_batches} would score {config.train.eval_batches * batch_tokens:,} "
            f"tokens at each evaluation, the validation split's {meta['val_tokens']:,} more than {EVAL_PASSES} "
            f"times over; choose eval_batches of at most {max(most, 1):,}"
        )
    data_vocab = meta["vocab_size"]
    if config.model.vocab_size < data_vocab:
        raise ConfigError(
            f"vocab_size={config.model.vocab_size} is smaller than the data's vocabulary of "
            f"{data_vocab} tokens; drop the vocab_size setting or raise it"
        )


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: RunConfig,
    resume: bool = False,
    progress: bool | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
    notes: dict | None = None,
) -> TrainResult:
    """Train (or, with `resume`, continue) the run in `run_dir`. `init_weights` starts from given weights (a
    state dict in our names, e.g. from `--init-from`) instead of a fresh initialisation. `notes` go into
    config.json beside the settings (what recipe=auto measured and chose). Under torchrun, every
    process calls this; rank 0 alone writes."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    train_config = config.train
    check_data_fits(config, data_dir)
    group = distributed.start(train_config.device)
    device = pick_device(train_config.device)
    keep_freed_memory()
    torch.manual_seed(train_config.seed)

    def windows(directory: str | Path) -> BatchLoader:
        return BatchLoader(
            directory,
            config.model.block_size,
            train_config.batch_size,
            train_config.seed,
            rank=group.rank,
            micro_steps=train_config.grad_accum,
            device=device,
        )

    if data_kind(data_dir) == "tasks":
        loader = TaskLoader(data_dir, train_config.batch_size, train_config.seed, group.rank, train_config.grad_accum)
    else:
        loader = windows(data_dir)
    # supervised data replayed beside a tuning objective's batches (TrainConfig.replay_data)
    replay = None if train_config.replay_data is None else windows(train_config.replay_data)
    tokenizer = load_tokenizer(data_dir / "tokenizer.json")
    backend = make_backend(config, device, group, tokenizer)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    step, elapsed, best_val_loss, val_loss = 0, 0.0, math.inf, None

    if init_weights is not None:  # a fine-tune's start, or a LoRA run's frozen base (on resume too)
        backend.load_weights(init_weights)
    if resume:
        directory = find_checkpoint(run_dir, "latest")
        _check_same_tokenizer(data_dir, run_dir)
        weights, tensors, state = load_training_state(directory)
        backend.restore(weights, tensors, state)
        step, elapsed = state["step"], state["elapsed"]
        best_val_loss, val_loss = state["best_val_loss"] or math.inf, state["val_loss"]
    elif (run_dir / "latest.json").exists():
        raise CheckpointError(f"{run_dir} already holds a run; add --resume to continue it, or choose another --out")
    if group.is_main and progress is not False and notes and "recipe" in notes:
        recipe = notes["recipe"]
        tqdm.write(f"recipe=auto chose depth {recipe['depth']}: {recipe['why']}")
        tqdm.write(
            f"aiming at a val loss near {recipe['predicted_val_loss']:.2f} (the law's prediction, fitted on "
            "Tiny Shakespeare: text like it lands near it)"
        )
    compile_seconds = 0.0
    if backend.compiled:
        if group.is_main and progress is not False:
            tqdm.write(f"compiling the blocks before the clock starts ({backend.compile_reason})")
        compile_seconds = backend.compile_now(loader.batch("train", step, 0))
        if group.is_main and progress is not False:
            tqdm.write(
                f"compiled in {compile_seconds:.1f}s, outside the training time; the cache in "
                f"{backend.compile_cache} makes later runs of this shape start faster"
            )
    if group.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            metrics.truncate_after(step)
        else:
            metrics.path.unlink(missing_ok=True)
            tokenizer.save(run_dir / "tokenizer.json")
        # the data's sources and their sha256, so that --resume can tell the same data from other data
        sources = read_meta(data_dir)["sources"]
        # what dtype=auto and compile=auto became, and why
        precision = {"dtype": backend.precision, "why": backend.precision_reason}
        compiled = {"blocks": backend.compiled, "why": backend.compile_reason, "seconds": round(compile_seconds, 1)}
        write_json_atomic(
            run_dir / "config.json",
            {
                **config.to_dict(),
                "data": str(data_dir),
                "data_sources": sources,
                "precision": precision,
                "compiled": compiled,
                **(notes or {}),
            },
        )

    # bits per byte beside the loss, so that runs of different tokenizers compare (chat data scores the replies
    # alone, whose bytes are not the split's: no bpb there); only the main process logs it
    val_ratio = None
    if group.is_main and data_kind(data_dir) == "text":
        val_ratio = tokens_per_byte(tokenizer, open_split(data_dir, "val"))

    def val_bpb() -> float | None:
        return None if val_ratio is None or val_loss is None else bits_per_byte(val_loss, val_ratio, 1)

    tracker = open_tracker(train_config.tracker, run_dir, config.to_dict()) if group.is_main else None
    tokens_per_step = train_config.batch_size * train_config.grad_accum * config.model.block_size * group.world_size
    budget = train_config.time_budget

    def out_of_time() -> bool:
        return budget is not None and time_progress(step, elapsed, train_config) >= 1

    # seconds of the budget; with min_steps, the percent done (the seconds or the steps, whichever end later)
    bar_unit = "step" if budget is None else "%" if train_config.min_steps else "s"

    def bar_position() -> int:
        if bar_unit == "step":
            return step
        if bar_unit == "%":
            return min(100, round(100 * time_progress(step, elapsed, train_config)))
        return round(elapsed)

    val_extra: dict[str, float] = {}  # what the objective reports beside the val loss (DPO's margin and accuracy)

    def evaluate_and_save(interrupted: bool = False) -> None:
        nonlocal best_val_loss, val_loss, val_extra
        if not interrupted:
            scores = estimate_val_scores(backend, loader, train_config.eval_batches)
            scores = {name: group.mean(value, device) for name, value in scores.items()}
            val_loss, val_extra = scores.pop("loss"), scores
        if not group.is_main:
            return
        if not interrupted:
            bpb = {} if val_bpb() is None else {"val_bpb": val_bpb()}
            extra = {f"val_{name}": value for name, value in val_extra.items()}
            metrics.append({"step": step, "val_loss": val_loss, **bpb, **extra, "elapsed": round(elapsed, 3)})
            if tracker is not None:
                series = {"val/loss": val_loss, **({"val/bpb": bpb["val_bpb"]} if bpb else {})}
                tracker.log({**series, **{f"val/{name}": value for name, value in val_extra.items()}}, step)
        is_best = not interrupted and val_loss < best_val_loss
        best_val_loss = min(best_val_loss, val_loss) if val_loss is not None else best_val_loss
        weights, tensors, extra = backend.state()
        progress_state = {
            "elapsed": elapsed,
            "val_loss": val_loss,
            "best_val_loss": None if math.isinf(best_val_loss) else best_val_loss,
            **extra,
        }
        save_checkpoint(run_dir, step, weights, tensors, progress_state, is_best)

    bar = tqdm(
        total={"step": train_config.max_steps, "%": 100, "s": round(budget or 0)}[bar_unit],
        initial=step if bar_unit == "step" else 0,
        unit=bar_unit,
        dynamic_ncols=True,
        disable=not group.is_main or (None if progress is None else not progress),
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
    )
    if group.is_main and progress is not False:
        bar.write(f"products in {backend.precision} on {device.type}: {backend.precision_reason}")
    rate_tokens, rate_time = 0, 0.0
    last_evaluated = step if resume else -1
    with StopRequest() as stop:
        # Every process must take the same decision to stop, or the others would wait for it forever.
        stopping = group.any(stop.requested or out_of_time(), device)
        while step < train_config.max_steps and not stopping:
            started = time.perf_counter()
            lr = learning_rate(step, elapsed, train_config)
            batches = [loader.batch("train", step, micro) for micro in range(train_config.grad_accum)]
            if replay is not None:
                batches = [Replayed(batch, replay.batch("train", step, micro)) for micro, batch in enumerate(batches)]
            train_loss = group.mean(backend.train_step(batches, lr, train_config.grad_clip), device)
            step += 1
            seconds = time.perf_counter() - started
            elapsed += seconds
            rate_tokens, rate_time = rate_tokens + tokens_per_step, rate_time + seconds
            if not math.isfinite(train_loss):
                raise LucidError(
                    f"the loss became {train_loss} at step {step}; {_after_divergence(run_dir, train_config)}"
                )
            step_metrics = {name: group.mean(value, device) for name, value in backend.metrics.items()}
            if group.is_main:
                grad_norm = float(backend.grad_norm)
                record = {"step": step, "loss": train_loss, "lr": lr, "grad_norm": grad_norm, **step_metrics}
                metrics.append({**record, "elapsed": round(elapsed, 3)})
                if tracker is not None:
                    tokens_per_second = tokens_per_step / seconds
                    tracker.log(
                        {"train/loss": train_loss, "train/lr": lr, "train/grad_norm": grad_norm,
                         "train/tokens_per_second": tokens_per_second,
                         **{f"train/{name}": value for name, value in step_metrics.items()}}, step
                    )  # fmt: skip
            bar.update(bar_position() - bar.n)
            shown = "".join(f" {name} {value:.3g}" for name, value in step_metrics.items() if name in SHOWN_METRICS)
            bar.set_postfix_str(
                f"step {step} loss {train_loss:.4f}{shown} lr {lr:.2e} {rate_tokens / rate_time:,.0f} tok/s",
                refresh=False,
            )
            if step % train_config.eval_interval == 0:
                evaluate_and_save()
                last_evaluated = step
                if group.is_main:
                    bpb = "" if val_bpb() is None else f" ({val_bpb():.4f} bits/byte)"
                    extra = "".join(f", {name.replace('_', ' ')} {value:.4g}" for name, value in val_extra.items())
                    bar.write(f"step {step}: val loss {val_loss:.4f}{bpb}{extra}, {elapsed:.0f}s")
            stopping = group.any(stop.requested or out_of_time(), device)
        if step != last_evaluated:
            evaluate_and_save(interrupted=stop.requested)
    bar.close()
    if tracker is not None:
        tracker.close()
    if group.is_main:
        metrics.plot(run_dir / "loss.png")
    backend.close()
    distributed.stop()
    return TrainResult(
        run_dir=run_dir,
        step=step,
        val_loss=val_loss,
        best_val_loss=None if math.isinf(best_val_loss) else best_val_loss,
        tokens_per_second=rate_tokens / rate_time if rate_time else 0.0,
        elapsed=elapsed,
        compile_seconds=compile_seconds,
        interrupted=stop.signal,
        model=backend.model,
        data_dir=data_dir,
        is_main=group.is_main,
    )


# The weights a tuning objective puts on parts of its loss, each used where a run has that part. Published recipes
# keep them near 1 or below (DPO's beta 0.01 to 0.5, a KL coefficient 0.001 to 0.1): one above LOSS_WEIGHT_LIMIT
# is what made a loss overflow, rather than the learning rate.
LOSS_WEIGHTS = {"dpo_beta": "dpo", "dpo_nll": "dpo", "kl_coef": "grpo", "replay_coef": "replay"}
LOSS_WEIGHT_LIMIT = 100.0


def _after_divergence(run_dir: Path, train: TrainConfig) -> str:
    """What to change, and what is left to --resume from, after the loss became nan or inf."""
    parts = {train.objective, "replay" if train.replay_data else ""}
    heavy = [name for name, part in LOSS_WEIGHTS.items() if part in parts and getattr(train, name) > LOSS_WEIGHT_LIMIT]
    change = (
        f"{heavy[0]}={getattr(train, heavy[0]):g} overflows the loss; lower it (--set {heavy[0]}=...)"
        if heavy
        else "lower lr (--set lr=...)"
    )
    try:
        step = read_manifest(run_dir, "latest")["step"]
    except CheckpointError:
        return f"no checkpoint was saved, so nothing was kept; {change} and train again"
    return f"the last good checkpoint is step {step}; {change} and --resume"


def _check_same_tokenizer(data_dir: Path, run_dir: Path) -> None:
    if not load_tokenizer(run_dir / "tokenizer.json").matches_file(data_dir / "tokenizer.json"):
        raise ConfigError(
            f"{data_dir} was prepared with another tokenizer than the run in {run_dir}; "
            "resume with the data the run was trained on"
        )
