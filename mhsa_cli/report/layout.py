"""Fitting a wide table into a terminal without cutting a cell: split it by column groups.

Generic over columns: :func:`split_columns` sees a list of columns, a way to
measure a table of some of them, each column's group and priority level. The
bench table uses it (:func:`mhsa_cli.report.bench.layout`); a new column joins
its group, a new group is one more unit to pack.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

C = TypeVar("C")


def groups(cols: Sequence[C], group: Callable[[C], str]) -> list[list[C]]:
    """Runs of consecutive columns with the same group (size, test acc, cpu b=1, ...), in order."""
    runs: list[list[C]] = []
    for c in cols:
        if runs and group(runs[-1][0]) == group(c):
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


def _fit_group(pinned: list[C], run: list[C], width: int, measure: Callable[[list[C]], int],
               level: Callable[[C], int]) -> list[C]:
    """A group too wide beside the pinned columns loses columns by priority (level 2, then 1)."""
    for most in (2, 1, 0):
        kept = [c for c in run if level(c) <= most]
        if measure(pinned + kept) <= width:
            return kept
    return [c for c in run if level(c) == 0]


def split_columns(cols: Sequence[C], width: int | None, measure: Callable[[list[C]], int],
                  group: Callable[[C], str], level: Callable[[C], int], pinned: int = 1) -> list[list[C]]:
    """The column sets of the tables that show ``cols`` within ``width`` terminal columns.

    Args:
        cols: every column, in table order.
        width: the terminal width; None: no limit (one table).
        measure: columns -> the width a table of them needs with no cell cut.
        group: a column's group; groups are never split across tables.
        level: a column's priority (0 always kept); only a group too wide on its
            own drops columns, highest level first.
        pinned: leading columns repeated in every table (the row names).

    Returns:
        One column list per table: the whole table when it fits, else whole
        groups packed greedily, in order, into as few tables as fit.
    """
    cols = list(cols)
    if width is None or measure(cols) <= width:
        return [cols]
    head, tables, current = cols[:pinned], [], []
    for run in groups(cols[pinned:], group):
        if measure(head + current + run) <= width:
            current += run
            continue
        if current:
            tables.append(head + current)
        current = _fit_group(head, run, width, measure, level)
    tables.append(head + current)
    return tables
