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

from lucidlm.data.loader import BatchLoader, Replayed, data_kind, is_chat_data, read_meta
from lucidlm.device import pick_device
from lucidlm.errors import STOP_SIGNALS, CheckpointError, ConfigError, LucidError, interruption
from lucidlm.memory import keep_freed_memory
from lucidlm.outputs import write_json_atomic
from lucidlm.run_config import RunConfig, TrainConfig
from lucidlm.runs import find_checkpoint, load_training_state, read_manifest, save_checkpoint
from lucidlm.tokenizers import Tokenizer, load_tokenizer
from lucidlm.train import distributed
from lucidlm.train.backends import NumpyBackend, TorchBackend, make_backend
from lucidlm.train.reporting import Progress, Reporter
from lucidlm.train.rl import TaskLoader
from lucidlm.train.schedule import learning_rate, time_progress


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
    data_dir, run_dir, settings = Path(data_dir), Path(run_dir), config.train
    check_data_fits(config, data_dir)
    group = distributed.start(settings.device)
    device = pick_device(settings.device)
    keep_freed_memory()
    torch.manual_seed(settings.seed)
    loader, replay = make_loaders(data_dir, config, group.rank, device)
    tokenizer = load_tokenizer(data_dir / "tokenizer.json")
    backend = make_backend(config, device, group, tokenizer)
    state = start_state(backend, data_dir, run_dir, resume, init_weights)
    report = Reporter(run_dir, data_dir, config, tokenizer, group.is_main, progress, state, resume)
    compile_seconds = prepare_run(backend, device, loader, state, report, notes)
    if group.is_main:
        write_run_files(run_dir, data_dir, config, tokenizer, backend, compile_seconds, notes, resume)
    tokens_per_step = settings.batch_size * settings.grad_accum * config.model.block_size * group.world_size

    with StopRequest() as stop:
        # Every process must take the same decision to stop, or the others would wait for it forever.
        while state.step < settings.max_steps and not group.any(stop.requested or out_of_time(state, settings), device):
            # the step: the batch is a pure function of (seed, step, rank, micro-step)
            started = time.perf_counter()
            lr = learning_rate(state.step, state.elapsed, settings)
            batches = [loader.batch("train", state.step, micro) for micro in range(settings.grad_accum)]
            if replay is not None:
                batches = [Replayed(batch, replay.batch("train", state.step, i)) for i, batch in enumerate(batches)]
            loss = group.mean(backend.train_step(batches, lr, settings.grad_clip), device)
            seconds = time.perf_counter() - started
            state.step, state.elapsed = state.step + 1, state.elapsed + seconds
            state.rate_tokens, state.rate_seconds = state.rate_tokens + tokens_per_step, state.rate_seconds + seconds
            if not math.isfinite(loss):
                raise LucidError(f"the loss became {loss} at step {state.step}; {_after_divergence(run_dir, settings)}")
            step_metrics = {name: group.mean(value, device) for name, value in backend.metrics.items()}
            report.step(state, loss, lr, float(backend.grad_norm), step_metrics)
            # evaluation and saving
            if state.step % settings.eval_interval == 0:
                evaluate(backend, loader, settings.eval_batches, group, device, state)
                report.evaluation(state, line=True)
                save(backend, run_dir, state, group.is_main)
        # the stop: what the last step gave is evaluated and saved, unless a signal stopped the run
        if state.step != state.last_evaluated:
            if not stop.requested:
                evaluate(backend, loader, settings.eval_batches, group, device, state)
                report.evaluation(state, line=False)
            save(backend, run_dir, state, group.is_main, evaluated=not stop.requested)

    report.close()
    backend.close()
    distributed.stop()
    return TrainResult(
        run_dir=run_dir,
        step=state.step,
        val_loss=state.val_loss,
        best_val_loss=None if math.isinf(state.best_val_loss) else state.best_val_loss,
        tokens_per_second=state.tokens_per_second,
        elapsed=state.elapsed,
        compile_seconds=compile_seconds,
        interrupted=stop.signal,
        model=backend.model,
        data_dir=data_dir,
        is_main=group.is_main,
    )


# --- the parts of the loop ------------------------------------------------------------------------------------


def make_loaders(
    data_dir: Path, config: RunConfig, rank: int, device: torch.device
) -> tuple[BatchLoader | TaskLoader, BatchLoader | None]:
    """The batches of the data (windows of tokens, or task prompts), and of the supervised data a tuning
    objective replays beside its own (TrainConfig.replay_data), if any."""
    settings = config.train

    def windows(directory: str | Path) -> BatchLoader:
        block_size, batch_size, seed = config.model.block_size, settings.batch_size, settings.seed
        return BatchLoader(directory, block_size, batch_size, seed, rank, settings.grad_accum, device)

    if data_kind(data_dir) == "tasks":
        loader = TaskLoader(data_dir, settings.batch_size, settings.seed, rank, settings.grad_accum)
    else:
        loader = windows(data_dir)
    return loader, None if settings.replay_data is None else windows(settings.replay_data)


def start_state(
    backend: TorchBackend | NumpyBackend,
    data_dir: Path,
    run_dir: Path,
    resume: bool,
    init_weights: dict[str, torch.Tensor] | None,
) -> Progress:
    """The weights training starts from (fresh, given, or the latest checkpoint's with its optimizer state) and
    where the run stands."""
    if init_weights is not None:  # a fine-tune's start, or a LoRA run's frozen base (on resume too)
        backend.load_weights(init_weights)
    if not resume:
        if (run_dir / "latest.json").exists():
            raise CheckpointError(
                f"{run_dir} already holds a run; add --resume to continue it, or choose another --out"
            )
        return Progress()
    directory = find_checkpoint(run_dir, "latest")
    _check_same_tokenizer(data_dir, run_dir)
    weights, tensors, saved = load_training_state(directory)
    backend.restore(weights, tensors, saved)
    best = saved["best_val_loss"]
    return Progress(
        step=saved["step"],
        elapsed=saved["elapsed"],
        val_loss=saved["val_loss"],
        best_val_loss=math.inf if best is None else best,
        last_evaluated=saved["step"],
    )


def prepare_run(
    backend: TorchBackend | NumpyBackend,
    device: torch.device,
    loader: BatchLoader | TaskLoader,
    state: Progress,
    report: Reporter,
    notes: dict | None,
) -> float:
    """Say what was chosen, and compile the blocks before the clock starts; returns the seconds compiling took."""
    if notes and "recipe" in notes:
        recipe = notes["recipe"]
        report.note(f"recipe=auto chose depth {recipe['depth']}: {recipe['why']}")
        report.note(
            f"aiming at a val loss near {recipe['predicted_val_loss']:.2f} (the law's prediction, fitted on "
            "Tiny Shakespeare: text like it lands near it)"
        )
    compile_seconds = 0.0
    if backend.compiled:
        report.note(f"compiling the blocks before the clock starts ({backend.compile_reason})")
        compile_seconds = backend.compile_now(loader.batch("train", state.step, 0))
        report.note(
            f"compiled in {compile_seconds:.1f}s, outside the training time; the cache in "
            f"{backend.compile_cache} makes later runs of this shape start faster"
        )
    report.note(f"products in {backend.precision} on {device.type}: {backend.precision_reason}")
    return compile_seconds


def write_run_files(
    run_dir: Path,
    data_dir: Path,
    config: RunConfig,
    tokenizer: Tokenizer,
    backend: TorchBackend | NumpyBackend,
    compile_seconds: float,
    notes: dict | None,
    resume: bool,
) -> None:
    """config.json (the settings, the data's sources and their sha256, so that --resume can tell the same data
    from other data, and what dtype=auto and compile=auto became, and why) and, for a new run, tokenizer.json."""
    if not resume:
        tokenizer.save(run_dir / "tokenizer.json")
    compiled = {"blocks": backend.compiled, "why": backend.compile_reason, "seconds": round(compile_seconds, 1)}
    write_json_atomic(
        run_dir / "config.json",
        {
            **config.to_dict(),
            "data": str(data_dir),
            "data_sources": read_meta(data_dir)["sources"],
            "precision": {"dtype": backend.precision, "why": backend.precision_reason},
            "compiled": compiled,
            **(notes or {}),
        },
    )


def out_of_time(state: Progress, settings: TrainConfig) -> bool:
    return settings.time_budget is not None and time_progress(state.step, state.elapsed, settings) >= 1


def evaluate(
    backend: TorchBackend | NumpyBackend,
    loader: BatchLoader | TaskLoader,
    batches: int,
    group: distributed.Distributed,
    device: torch.device,
    state: Progress,
) -> None:
    """The val scores, averaged over the processes, into `state`."""
    scores = estimate_val_scores(backend, loader, batches)
    scores = {name: group.mean(value, device) for name, value in scores.items()}
    state.val_loss, state.val_extra = scores.pop("loss"), scores
    state.last_evaluated = state.step


def save(
    backend: TorchBackend | NumpyBackend, run_dir: Path, state: Progress, is_main: bool, evaluated: bool = True
) -> None:
    """The checkpoint of this step (and the best one, where this step's val loss is the lowest yet)."""
    if not is_main:
        return
    is_best = evaluated and state.val_loss < state.best_val_loss
    if state.val_loss is not None:
        state.best_val_loss = min(state.best_val_loss, state.val_loss)
    weights, tensors, extra = backend.state()
    save_checkpoint(run_dir, state.step, weights, tensors, {**state.saved(), **extra}, is_best)


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
