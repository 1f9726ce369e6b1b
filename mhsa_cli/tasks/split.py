"""Deterministic, stratified train / validation / test splits shared by ``digits`` and the file tasks."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import MhsaError


def check_fraction(name: str, value: Any, where: str) -> float:
    """Parse a split fraction and check it lies in (0, 0.5].

    Args:
        name: option name, for the message.
        value: the option value (number or numeric string).
        where: who is asking (task name or file), for the message.

    Returns:
        The fraction as a float.

    Raises:
        MhsaError: not a number, or outside (0, 0.5].
    """
    try:
        frac = float(value)
    except (TypeError, ValueError):
        raise MhsaError(f"{where}: {name} must be a number, got {value!r}") from None
    if not 0.0 < frac <= 0.5:
        raise MhsaError(f"{where}: {name} must be in (0, 0.5], got {value}")
    return frac


def _allocate(counts: list[int], caps: list[int], frac: float, target: int) -> list[int]:
    """Split ``target`` rows over classes in proportion to ``counts``.

    Largest-remainder rounding; class ``c`` never gets more than ``caps[c]``.
    Ties go to the lower class id, so the result is deterministic.
    """
    ideal = [n * frac for n in counts]
    take = [min(int(v), cap) for v, cap in zip(ideal, caps)]
    order = sorted(range(len(counts)), key=lambda c: (-(ideal[c] - int(ideal[c])), c))
    left = target - sum(take)
    while left > 0:
        open_ = [c for c in order if take[c] < caps[c]]
        if not open_:
            break
        for c in open_[:left]:
            take[c] += 1
        left -= min(left, len(open_))
    return take


def stratified_split(y: Sequence[int], val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[list[int], list[int], list[int]]:
    """Deterministic stratified train / val / test split of row indices.

    Every class keeps at least one row in train (a class with a single row goes
    to train entirely). Overall val / test sizes are ``round(N * fraction)``
    (at least 1 where possible), shared over classes by largest remainder.

    Args:
        y: class id of each row, length N.
        val_fraction: share of rows for validation, in [0, 1).
        test_fraction: share of rows for test; 0 for no test split.
        seed: seeds the ``torch.Generator`` that shuffles each class.

    Returns:
        ``(train, val, test)``: sorted row indices, disjoint, covering all rows.
    """
    n = len(y)
    classes = sorted(set(int(c) for c in y))
    members = {c: [i for i, v in enumerate(y) if int(v) == c] for c in classes}
    counts = [len(members[c]) for c in classes]
    gen = torch.Generator().manual_seed(int(seed))
    shuffled = [[members[c][j] for j in torch.randperm(len(members[c]), generator=gen).tolist()]
                for c in classes]

    def target(frac: float) -> int:
        return max(1, int(n * frac + 0.5)) if frac > 0 else 0

    n_test = _allocate(counts, [k - 1 for k in counts], test_fraction, target(test_fraction))
    n_val = _allocate(counts, [k - 1 - t for k, t in zip(counts, n_test)], val_fraction,
                      target(val_fraction))
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for rows, t, v in zip(shuffled, n_test, n_val):
        test += rows[:t]
        val += rows[t:t + v]
        train += rows[t + v:]
    return sorted(train), sorted(val), sorted(test)
