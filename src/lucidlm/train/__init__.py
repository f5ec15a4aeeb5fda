"""Training: the loop, the optimizer, the schedule, checkpoints and metrics."""

from lucidlm.load import find_checkpoint
from lucidlm.train.trainer import TrainResult, train

__all__ = ["TrainResult", "find_checkpoint", "train"]
