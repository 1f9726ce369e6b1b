"""Single-process defaults for distributed training (torchrun support builds on this).

Every helper is a no-op when the process is not part of a process group, so
the training loop calls them unconditionally.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import nn


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def shard(order: torch.Tensor) -> torch.Tensor:
    """This process's share of an index order (every ``world_size``-th item)."""
    return order[rank():: world_size()] if is_distributed() else order


def all_reduce_sum(value: int | float) -> int | float:
    """Sum a number over all processes (identity in one process)."""
    if not is_distributed():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    tdist.all_reduce(t)
    return type(value)(t.item())


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module to train: DDP-wrapped under torchrun, else ``model`` itself."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def barrier() -> None:
    if is_distributed():
        tdist.barrier()
