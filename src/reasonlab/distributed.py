"""Data-parallel training under `torchrun`: process group setup and the few collectives the trainer needs.

Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) training runs as
DistributedDataParallel over gloo on CPU or nccl on CUDA; launched plainly it is one process
and every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """Join the torchrun process group if there is one (once per process)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return World(rank, size, local_rank)


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def all_reduce(tensor: torch.Tensor, world: World, mean: bool = True) -> torch.Tensor:
    """Sum (or mean) of a tensor over all processes; the input is left untouched."""
    if not world.active:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / world.size if mean else out


def gather(tensors: dict[str, torch.Tensor], world: World) -> list[dict[str, torch.Tensor]]:
    """Every process's tensors (same names and shapes on each), in rank order, on every process."""
    if not world.active:
        return [tensors]
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(world.size)]
    for name, tensor in tensors.items():
        sent = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor.contiguous()  # gloo has no bool
        parts = [torch.empty_like(sent) for _ in range(world.size)]
        dist.all_gather(parts, sent)
        for rank, part in enumerate(parts):
            out[rank][name] = part.to(tensor.dtype)
    return out


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
