"""Data parallelism under ``torchrun``: which process am I, and what do the others say.

``torchrun --nproc_per_node N -m vlab.cli probe run ...`` (or ``vlab vlm train``) starts N
copies of the same command; each reads its rank from the environment. The engine then wraps
the model in DistributedDataParallel (NCCL on GPUs, gloo on CPU), gives each rank an equal
contiguous slice of every global batch (so the averaged gradients are the global batch's:
every sequence still weighs the same), evaluates and writes files on rank 0 only, and agrees
on stopping through collectives. Without torchrun everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per process (``cuda:LOCAL_RANK``) under torchrun; the request otherwise."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (rows divide evenly: validated)."""
        if not self.enabled:
            return tensor
        n = tensor.shape[0] // self.world
        return tensor[self.rank * n : (self.rank + 1) * n]

    def mean(self, value: float) -> float:
        """The mean of a float over ranks (for logging the global training loss)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank (stop requests)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_int(self, value: int | None) -> int | None:
        """Rank 0's integer (None allowed) on every rank."""
        if not self.enabled:
            return value
        t = torch.tensor([-1 if value is None else value], dtype=torch.int64)
        dist.broadcast(t, src=0)
        return None if t.item() < 0 else int(t.item())


def is_main_process() -> bool:
    """Rank 0, or not under torchrun: the process that reports and writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (idempotent); a single-process context
    when ``WORLD_SIZE`` is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
    return ctx
