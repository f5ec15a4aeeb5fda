"""Training: the loop, the optimizer, the schedule and metrics (the run directory is runs.py)."""

from lucidlm.train.trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
