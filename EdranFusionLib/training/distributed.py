"""torch.distributed set-up for data-parallel training under ``torchrun`` (gloo on CPU, nccl on CUDA).

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op, so the trainer has one code
path for one process and for many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start(device_type: str) -> Context:
    """Join the process group torchrun describes; a single process gets the trivial context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def stop(context: Context) -> None:
    if context.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(values: torch.Tensor, context: Context) -> torch.Tensor:
    """Element-wise sum over all processes (identity for one process)."""
    if context.world > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def share_buffers(model: torch.nn.Module, context: Context) -> None:
    """Give every replica rank 0's buffers (BatchNorm running statistics drift apart with local batches)."""
    if context.world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier(context: Context) -> None:
    if context.world > 1:
        dist.barrier()
