"""Tests for mhsa_cli/metrics.py against a hand-computed confusion matrix."""

from __future__ import annotations

import pytest
import torch

from mhsa_cli.metrics import ClassReport, classification_report, confusion_matrix, paired_delta

# 10 rows, 3 classes (a, b, c); c is never predicted, b is over-predicted
Y_TRUE = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 0])
Y_PRED = torch.tensor([0, 0, 1, 0, 1, 1, 1, 1, 0, 0])
#            pred a  b  c
CONFUSION = [[4, 1, 0],   # true a: 5 rows
             [0, 3, 0],   # true b: 3 rows
             [1, 1, 0]]   # true c: 2 rows


def test_confusion_matrix_by_hand():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == CONFUSION
    with pytest.raises(ValueError):
        confusion_matrix(Y_TRUE, Y_PRED[:3], 3)
    with pytest.raises(ValueError):
        confusion_matrix(Y_TRUE, Y_PRED + 3, 3)


def test_per_class_and_macro_scores_by_hand():
    r = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    a, b, c = r.classes
    # a: tp 4, predicted 5, actual 5; b: tp 3, predicted 5, actual 3; c: never predicted
    assert (a.precision, a.recall, a.f1, a.support) == (pytest.approx(0.8), pytest.approx(0.8), pytest.approx(0.8), 5)
    assert (b.precision, b.recall, b.support) == (pytest.approx(0.6), pytest.approx(1.0), 3)
    assert b.f1 == pytest.approx(2 * 0.6 * 1.0 / 1.6)
    assert (c.precision, c.recall, c.f1, c.support) == (0.0, 0.0, 0.0, 2)
    assert r.accuracy == pytest.approx(0.7) and r.total == 10
    assert r.macro_f1 == pytest.approx((0.8 + 0.75 + 0.0) / 3)
    assert r.macro_recall == pytest.approx((0.8 + 1.0 + 0.0) / 3)
    assert r.macro_precision == pytest.approx((0.8 + 0.6 + 0.0) / 3)
    assert r.imbalanced  # 5 vs 2


def test_agrees_with_scikit_learn_and_round_trips_json():
    sklearn = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    y, p = torch.randint(0, 4, (200,), generator=gen), torch.randint(0, 4, (200,), generator=gen)
    r = classification_report(y, p, list("wxyz"))
    prec, rec, f1, sup = sklearn.precision_recall_fscore_support(y, p, labels=range(4), zero_division=0)
    assert [c.f1 for c in r.classes] == pytest.approx(list(f1))
    assert [c.precision for c in r.classes] == pytest.approx(list(prec))
    assert r.macro_f1 == pytest.approx(sklearn.f1_score(y, p, average="macro"))
    assert ClassReport.from_dict(r.to_dict()) == r
    balanced = classification_report(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, 1]), ["x", "y"])
    assert not balanced.imbalanced


def test_paired_delta_by_hand():
    # 10 rows: the model alone right on rows 0-2 (gained 3), the baseline alone on row 3 (lost 1), 4-9 agree
    model = torch.tensor([1, 1, 1, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    base = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    d = paired_delta(model, base)
    assert (d.gained, d.lost, d.n) == (3, 1, 10)
    assert d.delta_pts == pytest.approx(100 * (model.float().mean() - base.float().mean()).item())  # 20 pts
    half = 1.959964 * ((4 / 10 - 0.2**2) / 10) ** 0.5  # Wald: var = ((b + c)/n - d^2) / n
    assert (d.low_pts, d.high_pts) == (pytest.approx(100 * (0.2 - half), abs=1e-4), pytest.approx(100 * (0.2 + half), abs=1e-4))
    same = paired_delta(base, base)  # no discordant row: a point, whatever the accuracy
    assert (same.delta_pts, same.low_pts, same.high_pts, same.gained, same.lost) == (0.0, 0.0, 0.0, 0, 0)
    with pytest.raises(ValueError):
        paired_delta(model, base[:3])
    with pytest.raises(ValueError):
        paired_delta(model[:0], base[:0])


def test_paired_interval_agrees_with_the_variance_of_per_row_differences():
    """Independent route: the per-row differences' sample mean and (population) standard error."""
    gen = torch.Generator().manual_seed(0)
    model, base = torch.rand(500, generator=gen) < 0.9, torch.rand(500, generator=gen) < 0.92
    diff = model.float() - base.float()  # (500,) in {-1, 0, 1}
    se = diff.std(unbiased=False).item() / 500**0.5
    d = paired_delta(model, base)
    assert d.delta_pts == pytest.approx(100 * diff.mean().item())
    assert d.high_pts - d.delta_pts == pytest.approx(100 * 1.959964 * se, rel=1e-5)
    assert d.delta_pts - d.low_pts == pytest.approx(100 * 1.959964 * se, rel=1e-5)
