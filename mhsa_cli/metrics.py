"""Per-class classification metrics: precision, recall, F1, macro-F1, confusion matrix.

Measurement only (:mod:`mhsa_cli.report.metrics` renders); results are
dataclasses with a JSON form (:meth:`ClassReport.to_dict`) that checkpoints and
bench files store under ``test_classes``.

Conventions (those of scikit-learn's ``classification_report`` with
``zero_division=0``): ``confusion[i][j]`` counts rows of true class ``i``
predicted as ``j``; a class never predicted has precision 0, a class absent
from the data has recall 0, and F1 is 0 when precision + recall is 0. Macro
averages weigh every class alike, whether or not it occurs in the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

# Classes are "imbalanced" when the largest is this many times the smallest (in the
# data measured); bench then shows macro-F1 beside accuracy.
IMBALANCE_RATIO = 1.5


@dataclass
class ClassScore:
    """One class's scores (fractions in [0, 1]); ``support`` = true rows of the class."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassReport:
    """Metrics of one split: accuracy, per-class scores, macro averages, confusion."""

    labels: list[str]
    confusion: list[list[int]]  # [true][predicted] row counts
    classes: list[ClassScore]
    accuracy: float
    macro_precision: float
    macro_recall: float  # = balanced accuracy
    macro_f1: float
    total: int

    @property
    def imbalanced(self) -> bool:
        """Largest class at least :data:`IMBALANCE_RATIO` x the smallest (present ones)."""
        sizes = [c.support for c in self.classes if c.support]
        return bool(sizes) and max(sizes) >= IMBALANCE_RATIO * min(sizes)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored in checkpoints and bench files)."""
        return {**asdict(self), "imbalanced": self.imbalanced}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassReport":
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "classes": [ClassScore(**c) for c in d["classes"]]})


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = true class, columns = predicted class.

    Raises:
        ValueError: lengths differ or a class id is outside ``[0, num_classes)``.
    """
    y_true, y_pred = y_true.reshape(-1).long().cpu(), y_pred.reshape(-1).long().cpu()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.numel()} true labels but {y_pred.numel()} predictions")
    for t in (y_true, y_pred):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"class ids must be in [0, {num_classes})")
    flat = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)


def classification_report(y_true: torch.Tensor, y_pred: torch.Tensor, labels: list[str]) -> ClassReport:
    """Per-class precision, recall, F1 and their macro averages, from class ids.

    Args:
        y_true: (N,) true class ids.
        y_pred: (N,) predicted class ids.
        labels: class names; index = class id.

    Returns:
        A :class:`ClassReport`.

    Raises:
        ValueError: see :func:`confusion_matrix`.
    """
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp, predicted, actual = cm.diag(), cm.sum(0), cm.sum(1)  # (C,) each
    classes = []
    for k, label in enumerate(labels):
        p, r = _ratio(int(tp[k]), int(predicted[k])), _ratio(int(tp[k]), int(actual[k]))
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        classes.append(ClassScore(label, p, r, f1, int(actual[k])))
    n = len(labels)
    return ClassReport(
        labels=list(labels), confusion=cm.tolist(), classes=classes,
        accuracy=_ratio(int(tp.sum()), int(cm.sum())),
        macro_precision=sum(c.precision for c in classes) / n,
        macro_recall=sum(c.recall for c in classes) / n,
        macro_f1=sum(c.f1 for c in classes) / n,
        total=int(cm.sum()),
    )


# --------------------------------------------------------------------------- paired accuracy difference

Z95 = 1.959963984540054  # standard normal 97.5 % quantile


@dataclass
class PairedDelta:
    """Model minus baseline accuracy on the **same** rows, in percentage points, with a 95 % interval.

    ``gained`` rows the model gets right and the baseline wrong, ``lost`` the reverse; the rest agree and
    carry no information about the difference (McNemar). The interval is the Wald interval of a paired
    difference of proportions: d = (gained - lost) / n, var(d) = ((gained + lost) / n - d^2) / n,
    d +- 1.96 sqrt(var) (Newcombe 1998, method 10's normal form). With no discordant row it is [d, d].
    """

    delta_pts: float
    low_pts: float
    high_pts: float
    gained: int
    lost: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_delta(model_correct: torch.Tensor, base_correct: torch.Tensor) -> PairedDelta:
    """:class:`PairedDelta` of two (N,) bool tensors: row i right for the model / for the baseline.

    Raises:
        ValueError: lengths differ or there are no rows.
    """
    m, b = model_correct.reshape(-1).bool().cpu(), base_correct.reshape(-1).bool().cpu()
    if m.shape != b.shape or not m.numel():
        raise ValueError(f"paired rows needed: {m.numel()} and {b.numel()} given")
    n, gained, lost = m.numel(), int((m & ~b).sum()), int((~m & b).sum())
    d = (gained - lost) / n
    half = Z95 * max((gained + lost) / n - d * d, 0.0) ** 0.5 / n**0.5
    return PairedDelta(100 * d, 100 * (d - half), 100 * (d + half), gained, lost, n)
