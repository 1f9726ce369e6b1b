"""report/layout.py: splitting a wide table by column groups, with a hand-made width model."""

from __future__ import annotations

from mhsa_cli.report.layout import groups, split_columns

# (name, group, level, width): a table's width is the sum of its columns' widths
COLS = [("model", "", 0, 10), ("kind", "", 1, 6), ("heads", "", 1, 6),
        ("params", "size", 1, 10), ("disk", "size", 0, 10), ("ratio", "size", 0, 6),
        ("acc", "acc", 0, 8), ("delta", "acc", 0, 7),
        ("p50", "b1", 0, 7), ("p90", "b1", 2, 7), ("speedup", "b1", 0, 8), ("per s", "b1", 1, 7),
        ("p50", "b32", 0, 7), ("p90", "b32", 2, 7), ("speedup", "b32", 0, 8), ("per s", "b32", 1, 7)]


def split(width, cols=COLS):
    return [[f"{c[1]}:{c[0]}" for c in t] for t in
            split_columns(cols, width, lambda cs: sum(c[3] for c in cs), group=lambda c: c[1], level=lambda c: c[2])]


def test_groups_are_runs_in_order():
    assert [[c[0] for c in g] for g in groups(COLS[:5], lambda c: c[1])] == [["model", "kind", "heads"], ["params", "disk"]]


def test_whole_table_when_it_fits_or_no_width():
    assert len(split(None)) == 1 and len(split(None)[0]) == len(COLS)
    assert len(split(sum(c[3] for c in COLS))) == 1


def test_packs_whole_groups_greedily_with_the_model_column_repeated():
    # widths: model 10 | "" 12 | size 26 | acc 15 | b1 29 | b32 29
    tables = split(60)
    assert tables == [[":model", ":kind", ":heads", "size:params", "size:disk", "size:ratio"],  # 48
                      [":model", "acc:acc", "acc:delta", "b1:p50", "b1:p90", "b1:speedup", "b1:per s"],  # 54
                      [":model", "b32:p50", "b32:p90", "b32:speedup", "b32:per s"]]  # 39
    assert all(t[0] == ":model" for t in tables)
    shown = [c for t in tables for c in t[1:]]
    assert len(shown) == len(set(shown)) == len(COLS) - 1  # every column once, nothing dropped


def test_a_group_wider_than_the_terminal_drops_by_priority():
    # model 10 + b1 29 = 39 > 35: drop level 2 (p90) -> 32 fits
    tables = split(35)
    b1 = next(t for t in tables if "b1:p50" in t)
    assert b1 == [":model", "b1:p50", "b1:speedup", "b1:per s"]
    # 25: level 1 goes too -> model + p50 + speedup = 25
    assert next(t for t in split(25) if "b1:p50" in t) == [":model", "b1:p50", "b1:speedup"]
