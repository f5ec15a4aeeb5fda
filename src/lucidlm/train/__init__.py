"""Training: the loop, the optimizer, the schedule, checkpoints and metrics."""

from lucidlm.train.checkpoint import find_checkpoint, load_model
from lucidlm.train.trainer import TrainResult, train

__all__ = ["TrainResult", "find_checkpoint", "load_model", "train"]
