"""What a run tells the people watching it, in one object: the progress bar (tokens/s, loss, ETA), metrics.jsonl,
the trackers (train/tracking.py), the notes above the bar and loss.png at the end. Only the main process of a
torchrun job reports; the others hold a Reporter that says nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lucidlm.data.loader import data_kind, open_split
from lucidlm.evaluate import bits_per_byte, tokens_per_byte
from lucidlm.run_config import RunConfig
from lucidlm.tokenizers import Tokenizer
from lucidlm.train.metrics import MetricsLog
from lucidlm.train.schedule import time_progress
from lucidlm.train.tracking import open_tracker

# what the progress bar shows beside the loss, where an objective reports it
SHOWN_METRICS = ("reward_margin", "reward_accuracy", "reward", "kl", "replay_loss")


@dataclass
class Progress:
    """Where a run stands: what a checkpoint saves, and what the reports read."""

    step: int = 0
    elapsed: float = 0.0  # seconds of training steps: what a time budget counts
    val_loss: float | None = None
    best_val_loss: float = math.inf
    val_extra: dict[str, float] = field(default_factory=dict)  # what the objective reports beside the val loss
    last_evaluated: int = -1  # the step of the last evaluation
    rate_tokens: int = 0  # tokens trained in this process's steps, for the rate
    rate_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.rate_tokens / self.rate_seconds if self.rate_seconds else 0.0

    def saved(self) -> dict:
        """The part a checkpoint's state.json keeps (with the backend's own)."""
        best = None if math.isinf(self.best_val_loss) else self.best_val_loss
        return {"elapsed": self.elapsed, "val_loss": self.val_loss, "best_val_loss": best}


class Reporter:
    def __init__(
        self,
        run_dir: Path,
        data_dir: Path,
        config: RunConfig,
        tokenizer: Tokenizer,
        is_main: bool,
        shown: bool | None,
        progress: Progress,
        resume: bool,
    ):
        """`shown`: the progress bar and notes on (True), off (False), or on where stderr is a terminal (None)."""
        self.run_dir, self.settings, self.is_main = run_dir, config.train, is_main
        self.notes_shown = is_main and shown is not False
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if resume:
                self.metrics.truncate_after(progress.step)
            else:
                self.metrics.path.unlink(missing_ok=True)
        self.tracker = open_tracker(self.settings.tracker, run_dir, config.to_dict()) if is_main else None
        # bits per byte beside the loss, so that runs of different tokenizers compare (chat data scores the replies
        # alone, whose bytes are not the split's: no bpb there)
        self.val_ratio = None
        if is_main and data_kind(data_dir) == "text":
            self.val_ratio = tokens_per_byte(tokenizer, open_split(data_dir, "val"))
        budget = self.settings.time_budget
        # seconds of the budget; with min_steps, the percent done (the seconds or the steps, whichever end later)
        self.bar_unit = "step" if budget is None else "%" if self.settings.min_steps else "s"
        self.bar = tqdm(
            total={"step": self.settings.max_steps, "%": 100, "s": round(budget or 0)}[self.bar_unit],
            initial=progress.step if self.bar_unit == "step" else 0,
            unit=self.bar_unit,
            dynamic_ncols=True,
            disable=not is_main or (None if shown is None else not shown),
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
        )

    def note(self, text: str) -> None:
        """A line above the progress bar (what was chosen and why)."""
        if self.notes_shown:
            self.bar.write(text)

    def val_bpb(self, progress: Progress) -> float | None:
        if self.val_ratio is None or progress.val_loss is None:
            return None
        return bits_per_byte(progress.val_loss, self.val_ratio, 1)

    def step(self, progress: Progress, loss: float, lr: float, grad_norm: float, step_metrics: dict) -> None:
        """One training step: a line of metrics.jsonl, the trackers' series, the bar."""
        if not self.is_main:
            return
        record = {"step": progress.step, "loss": loss, "lr": lr, "grad_norm": grad_norm, **step_metrics}
        self.metrics.append({**record, "elapsed": round(progress.elapsed, 3)})
        if self.tracker is not None:
            tokens_per_second = progress.rate_tokens / progress.rate_seconds
            series = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm}
            series |= {"train/tokens_per_second": tokens_per_second}
            self.tracker.log({**series, **{f"train/{name}": v for name, v in step_metrics.items()}}, progress.step)
        self.bar.update(self.bar_position(progress) - self.bar.n)
        shown = "".join(f" {name} {value:.3g}" for name, value in step_metrics.items() if name in SHOWN_METRICS)
        self.bar.set_postfix_str(
            f"step {progress.step} loss {loss:.4f}{shown} lr {lr:.2e} {progress.tokens_per_second:,.0f} tok/s",
            refresh=False,
        )

    def bar_position(self, progress: Progress) -> int:
        if self.bar_unit == "step":
            return progress.step
        if self.bar_unit == "%":
            return min(100, round(100 * time_progress(progress.step, progress.elapsed, self.settings)))
        return round(progress.elapsed)

    def evaluation(self, progress: Progress, line: bool) -> None:
        """An evaluation: metrics.jsonl and the trackers, and with `line` a line above the bar."""
        if not self.is_main:
            return
        bpb = self.val_bpb(progress)
        scores = {"val_loss": progress.val_loss, **({} if bpb is None else {"val_bpb": bpb})}
        scores |= {f"val_{name}": value for name, value in progress.val_extra.items()}
        self.metrics.append({"step": progress.step, **scores, "elapsed": round(progress.elapsed, 3)})
        if self.tracker is not None:
            self.tracker.log(
                {f"val/{name.removeprefix('val_')}": value for name, value in scores.items()}, progress.step
            )
        if line:
            shown = "" if bpb is None else f" ({bpb:.4f} bits/byte)"
            extra = "".join(f", {name.replace('_', ' ')} {value:.4g}" for name, value in progress.val_extra.items())
            self.bar.write(
                f"step {progress.step}: val loss {progress.val_loss:.4f}{shown}{extra}, {progress.elapsed:.0f}s"
            )

    def close(self) -> None:
        self.bar.close()
        if self.tracker is not None:
            self.tracker.close()
        if self.is_main:
            self.metrics.plot(self.run_dir / "loss.png")
