"""Several processes, one model: PyTorch DistributedDataParallel under `torchrun`.

torchrun starts one process per GPU (or CPU worker) and tells each its RANK, LOCAL_RANK and WORLD_SIZE. Every
process builds the same model from the same seed, draws its own batches (the loader's pure function of seed,
step and global micro-batch index), and DDP averages the gradients across processes during backward. Only rank
0 writes logs, metrics and checkpoints. NCCL connects GPUs; gloo connects CPU processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float, device: torch.device) -> float:
        """The average of `value` over all processes (the value itself when there is one)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process when it is True on any: stop decisions must be taken together."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


def start(device_name: str) -> Distributed:
    """Join the process group when launched by torchrun; a plain launch is a group of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    context = Distributed(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return context


def stop() -> None:
    """Leave the process group together: a process that tears down its connections while another still uses
    them can abort ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
