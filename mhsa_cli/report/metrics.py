"""Render per-class metrics (:class:`mhsa_cli.metrics.ClassReport`): a scores table
and a confusion matrix, as rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from . import pct, table

MAX_CONFUSION_CLASSES = 20  # wider matrices are kept in the JSON only


def _report(obj: Any):
    from ..metrics import ClassReport

    return obj if isinstance(obj, ClassReport) else ClassReport.from_dict(obj)


def class_table(report: Any, title: str = "Per-class metrics (test)") -> Table:
    """Precision, recall, F1 and support per class, then the macro averages."""
    r = _report(report)
    rows = [(c.label, pct(c.precision), pct(c.recall), f"{c.f1:.4f}", c.support) for c in r.classes]
    rows.append(("macro", pct(r.macro_precision), pct(r.macro_recall), f"{r.macro_f1:.4f}", r.total))
    return table(title, ["class", "precision", "recall", "F1", "support"], rows)


def confusion_table(report: Any, title: str = "Confusion matrix (rows: true, columns: predicted)") -> Table:
    """Counts, rows = true class, columns = predicted class."""
    r = _report(report)
    return table(title, ["true \\ pred", *r.labels], [(label, *row) for label, row in zip(r.labels, r.confusion)])


def render_class_metrics(report: Any, console: Console, split: str = "test") -> None:
    """Print the per-class table and (up to :data:`MAX_CONFUSION_CLASSES` classes) the confusion matrix.

    Args:
        report: a :class:`ClassReport` or its ``to_dict()`` form (as stored in checkpoints).
        console: where to print.
        split: named in the titles.
    """
    r = _report(report)
    console.print(class_table(r, f"Per-class metrics ({split}, macro-F1 {r.macro_f1:.4f})"))
    if len(r.labels) <= MAX_CONFUSION_CLASSES:
        console.print(confusion_table(r, f"Confusion matrix ({split}; rows: true, columns: predicted)"))
