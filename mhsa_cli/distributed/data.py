"""Data-parallel training helpers: sharding, batch size, all-reduce, DDP.

Global and per-process batch size (:func:`local_batch_size`), the training
order from :class:`torch.utils.data.DistributedSampler` (:func:`sampler`,
:func:`train_order`), evaluation shards (:func:`shard`), sums and gradient
averages over processes (:func:`all_reduce_sum`, :func:`average_gradients`), the
DDP wrapper (:func:`wrap`, :func:`local_device`, :func:`register_outputs` for
:class:`~mhsa_cli.model.EncoderOutput`) and per-rank dropout streams
(:func:`decorrelate_rng`). In one process each is a no-op.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as tdist
from torch import nn

from .group import UniformError, is_distributed, rank, world_size


def local_batch_size(global_batch: int) -> int:
    """Per-process batch size for a global ``--batch-size``.

    Raises:
        UniformError: ``global_batch`` is not divisible by the number of processes.
    """
    n = world_size()
    if global_batch % n:
        raise UniformError(f"--batch-size {global_batch} is the global batch and must be divisible by "
                           f"the {n} processes (e.g. {max(n, global_batch // n * n)})")
    return global_batch // n


def sampler(n: int, seed: int, epoch: int, num_replicas: int | None = None,
            rank_: int | None = None) -> torch.utils.data.DistributedSampler:
    """The training sampler: shuffled by ``(seed, epoch)``, padded to equal shards.

    ``seed`` is the sampler's base seed; its permutation is
    ``torch.randperm(n, generator=manual_seed(seed + epoch))``.
    """
    from torch.utils.data import DistributedSampler

    s = DistributedSampler(range(n), num_replicas=num_replicas or world_size(),
                           rank=rank() if rank_ is None else rank_, shuffle=True, seed=seed,
                           drop_last=False)
    s.set_epoch(epoch)
    return s


def train_order(n: int, seed: int, epoch: int, num_replicas: int | None = None,
                rank_: int | None = None) -> torch.Tensor:
    """This process's sample indices for one training epoch (see :func:`sampler`)."""
    return torch.tensor(list(iter(sampler(n, seed, epoch, num_replicas, rank_))), dtype=torch.long)


def shard(order: torch.Tensor) -> torch.Tensor:
    """This process's share of an index order, without padding (every ``world_size``-th item).

    Used for evaluation, where each sample must count exactly once.
    """
    return order[rank():: world_size()] if is_distributed() else order


# --------------------------------------------------------------------------- collectives

def all_reduce_sum(value: Any) -> Any:
    """Sum a number, or each number of a list/tuple, over all processes (identity in one).

    Sums run in float64, so integer counts stay exact; the type of each item is kept.
    """
    if not is_distributed():
        return value
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    t = torch.tensor([float(v) for v in items], dtype=torch.float64)
    tdist.all_reduce(t)
    out = [type(v)(s) for v, s in zip(items, t.tolist())]
    return type(value)(out) if isinstance(value, (list, tuple)) else out[0]


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over processes for tensors that DDP does not own.

    (e.g. distillation projections trained next to the model). One collective.
    """
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK``'s device (set by :func:`setup`); others unchanged."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module to train: DDP-wrapped under torchrun, else ``model`` itself.

    ``static_graph=True``: the training graph is the same every step (one loss
    function per :func:`mhsa_cli.train.fit` call), so DDP learns in the first step
    which parameters get no gradient and skips them afterwards, without
    ``find_unused_parameters``' graph walk every step. Needed because some
    parameters legitimately get none: the ``ln1`` of a zero-head layer (after
    pruning) feeds an attention that only adds its bias. A loss whose set of used
    parameters changes from step to step is not supported. Tensors outside the
    model (``extra_params`` of :func:`mhsa_cli.train.fit`) are averaged by
    :func:`average_gradients`. Keyword arguments (``features=True``,
    ``output_attentions=True``) pass through DDP's ``forward``, and the
    :class:`~mhsa_cli.model.EncoderOutput` it then returns is registered as a
    pytree so that DDP sees the tensors inside it (see :func:`register_outputs`).
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    register_outputs()
    device = local_device(torch.device(device))
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   static_graph=True)


def register_outputs() -> None:
    """Make :class:`~mhsa_cli.model.EncoderOutput` a pytree node (idempotent).

    DDP finds the tensors a forward returns with ``torch.utils._pytree``; an
    unregistered dataclass looks like an opaque leaf, and then the first step of
    ``static_graph`` (or ``find_unused_parameters``) never hooks the backward: the
    gradients of that step would silently not be averaged and the ranks drift
    apart (a test covers it).
    """
    import dataclasses

    import torch.utils._pytree as pytree

    from ..model import EncoderOutput

    if EncoderOutput in pytree.SUPPORTED_NODES:
        return
    names = [f.name for f in dataclasses.fields(EncoderOutput)]
    pytree.register_pytree_node(
        EncoderOutput,
        lambda o: ([getattr(o, n) for n in names], None),
        lambda values, _: EncoderOutput(*values),
    )


def decorrelate_rng(seed: int) -> None:
    """Give ranks > 0 their own torch random stream (dropout masks), keeping rank 0's.

    Every rank seeds identically to build the same initial model; without this,
    all ranks would draw the same dropout masks. Rank 0 (and one process) is untouched.
    """
    if is_distributed() and rank() > 0:
        torch.manual_seed(seed * 1_000_003 + rank())
