"""Data-parallel training through ``torchrun``: process group, ranks and reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size``; rank 0 is the only writer."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def backend_for(device: torch.device) -> str:
    """The process group's backend: gloo on CPU; on CUDA, NCCL for CUDA tensors *and* gloo for CPU ones.

    The loop reduces small CPU tensors (the step's flags, the loss sums) whatever the training device;
    NCCL alone accepts CUDA tensors only, so a plain ``"nccl"`` group fails on the first step.
    """
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group torchrun describes (:func:`backend_for`); a no-op without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return env


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (unchanged in a single process)."""
    if env.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(value: bool, env: DistEnv) -> bool:
    """Rank 0's ``value`` on every rank (``value`` itself in a single process)."""
    if not env.enabled:
        return value
    flag = torch.tensor([float(value)])
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_buffers(module: torch.nn.Module, env: DistEnv) -> None:
    """Give every rank rank 0's buffers (BN running statistics), as the checkpoint holds them."""
    if env.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
