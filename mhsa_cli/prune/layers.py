"""Whole blocks (depth): their importance and their removal.

:func:`layer_importance` scores every block on the **validation** split with a
criterion from :data:`LAYER_IMPORTANCE`:

* ``loss`` -- the validation loss increase when the block is skipped (the
  residual stream passes it unchanged): ``L(skip l) - L(full)``; a block whose
  removal costs nothing scores ~0, one that helps scores > 0;
* ``random`` -- the seeded control.

:func:`select_layers` picks the ``n`` lowest; :func:`drop_layers` keeps the other
blocks (per-layer heads and ``d_ff`` follow) and proves with a forward pass that
the result equals the original with those blocks skipped.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .. import registry
from ..errors import MhsaError, choice
from ..model import MHSAClassifier
from ..tasks import Split, TaskData
from .importance import Batches, run_scorer
from .surgery import require_equal


def _mean_loss(model: MHSAClassifier, batches: Batches, skip: frozenset[int]) -> float:
    """Mean cross-entropy over ``batches`` with blocks ``skip`` passed by."""
    total, seen = 0.0, 0
    with torch.inference_mode():
        for x, y in batches:
            logits = model.forward_features(x, skip_layers=skip).logits  # (B, C)
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            seen += x.shape[0]
    return total / max(seen, 1)


def _loss(model: MHSAClassifier, batches: Batches, seed: int) -> torch.Tensor:
    """(L,) validation loss increase when each block alone is skipped."""
    base = _mean_loss(model, batches, frozenset())
    return torch.tensor([_mean_loss(model, batches, frozenset({i})) - base
                         for i in range(len(model.blocks))], dtype=torch.float64)


def _random(model: MHSAClassifier, batches: Batches, seed: int) -> torch.Tensor:
    """(L,) uniform random scores from ``seed``."""
    return torch.rand(len(model.blocks), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


LAYER_IMPORTANCE = registry.LAYER_IMPORTANCE
for _name, _fn in (("loss", _loss), ("random", _random)):
    LAYER_IMPORTANCE.register(_name, _fn)
LAYER_NEEDS_DATA = frozenset({"loss"})


def layer_importance(model: MHSAClassifier, data: Split | TaskData | None, method: str = "loss", *,
                     batch_size: int = 64, max_batches: int = 0, seed: int = 0) -> torch.Tensor:
    """Score every block of ``model``; higher = more important.

    Args:
        model: a float model (left unchanged, in its train/eval mode).
        data: the **validation** split, or a :class:`TaskData` whose ``val`` split is used
            (None for ``random``, which needs no data).
        method: a key of :data:`LAYER_IMPORTANCE`.
        batch_size, max_batches: validation batches used (0 = all).
        seed: seed of the ``random`` method.

    Returns:
        A float64 tensor ``(L,)`` on CPU.

    Raises:
        MhsaError: unknown method, no data for a method that needs it, or scores that are not finite.
    """
    fn = LAYER_IMPORTANCE[choice("layer importance method", method, LAYER_IMPORTANCE)]
    scores = run_scorer(fn, model, data, method, method in LAYER_NEEDS_DATA, "blocks", batch_size, max_batches, seed)
    if not torch.isfinite(scores).all():
        raise MhsaError(f"'{method}' layer importance produced non-finite scores (diverged model?)")
    return scores


def check_drop(n_layers: int, n: int) -> None:
    """Raise unless dropping ``n`` of ``n_layers`` blocks leaves at least one.

    Raises:
        MhsaError: ``n`` < 0, or ``n`` >= ``n_layers``.
    """
    if n < 0:
        raise MhsaError(f"--drop-layers must be >= 0, got {n}")
    if n >= n_layers:
        raise MhsaError(f"cannot drop {n} of {n_layers} layers: at least one must stay")


def select_layers(scores: torch.Tensor, n: int) -> list[int]:
    """The ``n`` lowest-scoring blocks (ties: the lower index), sorted.

    Raises:
        MhsaError: ``n`` would drop every block (or is negative).
    """
    check_drop(len(scores), n)
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:n])


def drop_layers(model: MHSAClassifier, layers: list[int]) -> MHSAClassifier:
    """Remove whole blocks; return a new model (``model`` is not modified).

    Args:
        model: a float :class:`MHSAClassifier`.
        layers: block indices (current numbering) to drop.

    Returns:
        The model with the other blocks, in order; ``config.heads`` and ``config.d_ff``
        list the kept blocks'.

    Raises:
        MhsaError: an index that does not exist, a repeated one, or every block.
        RuntimeError: the result differs from the original with those blocks skipped.
    """
    n = len(model.blocks)
    if len(set(layers)) != len(layers) or any(not 0 <= i < n for i in layers):
        raise MhsaError(f"bad layer indices {sorted(layers)} (the model has layers 0..{n - 1})")
    check_drop(n, len(layers))
    gone = frozenset(layers)
    pruned = copy.deepcopy(model)
    pruned.blocks = nn.ModuleList(b for i, b in enumerate(pruned.blocks) if i not in gone)
    pruned.config = dataclasses.replace(model.config, heads=pruned.heads, d_ff=pruned.ff_sizes).validate()
    require_equal(model, pruned, "layer-skipped", lambda: {"skip_layers": gone})
    return pruned
