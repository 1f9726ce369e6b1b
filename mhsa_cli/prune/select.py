"""Which heads go: pick the least important heads from their scores.

:func:`select_heads` turns importance scores into ``{layer: head indices}``:
a count (``ratio`` of all heads, or ``n``; see :func:`heads_to_remove_count`),
ranked across layers (``global``) or with the same fraction in every layer
(``layer``), keeping ``min_heads_per_layer``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import MhsaError, choice


def heads_to_remove_count(counts: list[int], ratio: float | None = None, n: int | None = None) -> int:
    """``n`` if given, else ``floor(ratio * total)`` (so ratio < 1 never removes every head).

    Raises:
        MhsaError: ratio outside [0, 1), or more heads than the model has.
    """
    total = sum(counts)
    if n is None:
        if ratio is None or not 0.0 <= ratio < 1.0:
            raise MhsaError(f"--ratio must be in [0, 1), got {ratio}")
        return math.floor(ratio * total + 1e-9)
    if n < 0 or n > total:
        raise MhsaError(f"--heads {n}: the model has {total} heads ({'+'.join(map(str, counts))})")
    return n


def _room(counts: list[int], min_heads: int, n: int) -> list[int]:
    """Heads each layer may lose; raises if ``min_heads`` or ``n`` cannot be honoured."""
    for layer, h in enumerate(counts):
        if min_heads > h:
            raise MhsaError(f"--min-heads-per-layer {min_heads} is larger than layer {layer}'s {h} heads")
    room = [h - min_heads for h in counts]
    if n > sum(room):
        raise MhsaError(f"cannot remove {n} heads: only {sum(room)} of {sum(counts)} can go "
                        f"with --min-heads-per-layer {min_heads}")
    return room


def _ascending(s: torch.Tensor) -> list[int]:
    return sorted(range(len(s)), key=lambda h: (float(s[h]), h))


def _select_global(scores: list[torch.Tensor], n: int, room: list[int]) -> list[list[int]]:
    """The ``n`` lowest scores across all layers, skipping layers that reached their floor."""
    ranked = sorted((float(s[h]), layer, h) for layer, s in enumerate(scores) for h in range(len(s)))
    removed: list[list[int]] = [[] for _ in scores]
    for _, layer, h in ranked:
        if sum(map(len, removed)) == n:
            break
        if len(removed[layer]) < room[layer]:
            removed[layer].append(h)
    return removed


def _select_layer(scores: list[torch.Tensor], n: int, room: list[int]) -> list[list[int]]:
    """The same fraction in every layer: each removal goes to the layer whose removed
    fraction would stay lowest (ties: the layer whose next head scores lowest)."""
    order = [_ascending(s) for s in scores]
    taken = [0] * len(scores)
    for _ in range(n):
        layer = min((l for l in range(len(scores)) if taken[l] < room[l]),
                    key=lambda l: ((taken[l] + 1) / len(scores[l]), float(scores[l][order[l][taken[l]]]), l))
        taken[layer] += 1
    return [o[:t] for o, t in zip(order, taken)]


SCOPES: dict[str, Callable[[list[torch.Tensor], int, list[int]], list[list[int]]]] = {
    "global": _select_global,
    "layer": _select_layer,
}


def select_heads(scores: list[torch.Tensor], ratio: float | None = None, n: int | None = None,
                 scope: str = "global", min_heads_per_layer: int = 0) -> dict[int, list[int]]:
    """Pick the least important heads.

    Args:
        scores: one ``(H_l,)`` tensor per layer (higher = more important).
        ratio: fraction of all heads to remove, in [0, 1); floored to a count.
        n: number of heads to remove (overrides ``ratio``).
        scope: ``global`` ranks all heads together; ``layer`` removes the same
            fraction from each layer (as near as whole heads allow), lowest scores first.
        min_heads_per_layer: no layer drops below this many heads (0: a layer may lose all).

    Returns:
        ``{layer: sorted head indices to remove}`` for every layer (empty lists included).

    Raises:
        MhsaError: bad ratio/count, unknown scope, or constraints that cannot be met.
    """
    counts = [len(s) for s in scores]
    count = heads_to_remove_count(counts, ratio, n)
    room = _room(counts, min_heads_per_layer, count)
    removed = SCOPES[choice("scope", scope, SCOPES)](scores, count, room)
    return {layer: sorted(idx) for layer, idx in enumerate(removed)}
