"""Batches of a split (seeded shuffling, length bucketing for ragged text) and evaluation
over them: :func:`batches`, :func:`predict_logits`, :func:`evaluate`, :func:`split_report`."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from . import distributed as dist
from .metrics import ClassReport, classification_report
from .tasks import Split

def shuffle_seed(seed: int) -> int:
    """The sampler seed of a run's ``--seed`` (the epoch is added by the sampler)."""
    return seed * 100003


BUCKET_CHUNK = 32  # bucketing sorts rows by length within windows of this many batches


def batch_index(split: Split, batch_size: int, shuffle: bool = False, seed: int = 0,
                epoch: int = 0, bucket: bool = True) -> list[torch.Tensor]:
    """This process's mini-batches as index tensors into ``split`` (``batch_size`` per process).

    With ``shuffle`` (training) the order comes from a ``DistributedSampler``
    seeded by (seed, epoch): one process gets the whole permutation
    ``randperm(n, seed * 100003 + epoch)``; under torchrun each process gets every
    ``world_size``-th index of it (padded to equal shares). With ``bucket`` and a
    ragged split, rows are then sorted by length inside windows of
    ``BUCKET_CHUNK`` batches and the batches shuffled (same seed and epoch), so a
    batch holds rows of similar length and is cut short (same number of batches).
    Without ``shuffle`` (evaluation) each process gets every ``world_size``-th
    sample, unpadded, so every sample is counted once; a ragged split's rows are
    taken in order of length (callers that need file order use the indices).
    """
    n = len(split)
    if not shuffle:
        order = dist.shard(torch.arange(n))
        if split.ragged:
            order = order[torch.sort(split.lengths[order], stable=True).indices]
        return list(order.split(batch_size))
    order = dist.train_order(n, shuffle_seed(seed), epoch)
    if not (bucket and split.ragged):
        return list(order.split(batch_size))
    out: list[torch.Tensor] = []
    for start in range(0, len(order), batch_size * BUCKET_CHUNK):
        window = order[start: start + batch_size * BUCKET_CHUNK]
        window = window[torch.sort(split.lengths[window], stable=True).indices]
        out.extend(window.split(batch_size))
    gen = torch.Generator().manual_seed(shuffle_seed(seed) + epoch + 1)
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


def batches(split: Split, batch_size: int, shuffle: bool = False, seed: int = 0,
            epoch: int = 0, bucket: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield this process's (x, y) mini-batches (see :func:`batch_index`); a ragged
    split's x is cut to the longest row of the batch (:meth:`Split.rows`)."""
    for idx in batch_index(split, batch_size, shuffle, seed, epoch, bucket):
        yield split.rows(idx)


@torch.inference_mode()
def predict_logits(model: nn.Module, split: Split, device: torch.device | str = "cpu",
                   batch_size: int = 256) -> torch.Tensor:
    """(N, C) float32 CPU logits of every row of ``split``, in row order (one process).

    Rows are batched by length (short batches for short rows) and put back in order.
    """
    was_training = model.training
    model.eval()
    out = None
    for idx in batch_index(split, batch_size):
        x, _ = split.rows(idx)
        logits = model(x.to(device)).float().cpu()  # (B, C)
        if out is None:
            out = torch.empty(len(split), logits.shape[1])
        out[idx] = logits
    model.train(was_training)
    return out if out is not None else torch.empty(0, 0)


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, device: torch.device | str = "cpu",
             batch_size: int = 256) -> float:
    """Accuracy of ``model`` on ``split`` (eval mode restored to the caller's mode).

    Under torchrun every rank must call it: each scores its unpadded shard and the
    correct counts are summed, so all ranks return the same value.
    """
    was_training = model.training
    model.eval()
    correct = 0
    for x, y in batches(split, batch_size):
        correct += int((model(x.to(device)).argmax(-1).cpu() == y).sum())
    correct, total = dist.all_reduce_sum(correct), len(split)
    model.train(was_training)
    return correct / max(total, 1)


def split_report(model: nn.Module, split: Split, labels: list[str], device: torch.device | str = "cpu",
                 batch_size: int = 256) -> ClassReport:
    """Per-class metrics and confusion matrix of ``model`` on ``split`` (one process)."""
    return classification_report(split.y, predict_logits(model, split, device, batch_size).argmax(-1), labels)
