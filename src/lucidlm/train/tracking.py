"""Experiment trackers: a run's series streamed where nanoGPT's and nanochat's users look for them.

`--set tracker=tensorboard|wandb|trackio` sends what metrics.jsonl holds (the loss, the learning rate, tokens/s
and the gradient norm each step; the validation loss and bits per byte at each evaluation) to the tracker,
with the resolved settings as the run's hyperparameters. Each tracker is an extra, not a dependency
(`pip install 'lucidlm[tensorboard]'`, `[wandb]`, `[trackio]`); metrics.jsonl and loss.png are written either
way.

- TensorBoard: event files in RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR`).
- Weights & Biases: offline, into RUN_DIR/wandb, unless the user has configured it (WANDB_API_KEY or
  WANDB_MODE set): a run is never sent anywhere the user did not ask for. `wandb sync` uploads it later.
- trackio: its local SQLite store (TRACKIO_DIR, by default ~/.cache/huggingface/trackio), project "lucidlm".
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from lucidlm.errors import ConfigError

PROJECT = "lucidlm"


def require(module: str, tracker: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"tracker={tracker} needs the {tracker} package; install it with pip install 'lucidlm[{tracker}]' "
            "or drop the tracker setting"
        ) from None


class TensorBoardTracker:
    def __init__(self, run_dir: Path, settings: dict):
        require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("settings", f"```\n{json.dumps(settings, indent=1)}\n```")
        sections = {section: values for section, values in settings.items() if isinstance(values, dict)}
        flat = {f"{section}.{name}": value for section, values in sections.items() for name, value in values.items()}
        self.writer.add_hparams({k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))}, {})

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, settings: dict):
        wandb = require("wandb", "wandb")
        configured = "WANDB_API_KEY" in os.environ or "WANDB_MODE" in os.environ
        self.run = wandb.init(
            project=PROJECT,
            name=run_dir.name,
            dir=str(run_dir),
            config=settings,
            mode=None if configured else "offline",
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    def __init__(self, run_dir: Path, settings: dict):
        self.trackio = require("trackio", "trackio")
        self.trackio.init(project=PROJECT, name=run_dir.name, config=settings)

    def log(self, values: dict[str, float], step: int) -> None:
        self.trackio.log(values, step=step)

    def close(self) -> None:
        self.trackio.finish()


KINDS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker}


def open_tracker(kind: str, run_dir: Path, settings: dict) -> TensorBoardTracker | WandbTracker | TrackioTracker | None:
    """The tracker a run asked for (None for "none"), opened with the run's settings as hyperparameters."""
    return None if kind == "none" else KINDS[kind](run_dir, settings)
