"""Logit parity: the one comparison behind every recorded logit gap.

Export (ORT fp32 vs torch, with a tolerance), bench (every ORT row's gap to
torch, recorded) and head removal (pruned vs head-gated original) all compare
two runtimes' logits. A plain ``(a - b).abs().max()`` cannot fail where it
should: a NaN gap is never ``> tolerance``, and a ``(1, C)`` output broadcasts
against a ``(B, C)`` one. So every gap goes through :func:`logit_gap` (shapes
equal exactly, every value finite) and every tolerance through
:func:`check_close` (``torch.testing.assert_close``'s rule, element by element:
``|actual - expected| <= atol + rtol * |expected|``)::

    >>> import torch
    >>> logit_gap(torch.zeros(2, 3), torch.full((2, 3), 0.5))
    0.5
    >>> check_close(torch.ones(2, 3), torch.ones(2, 3) + 1e-6, atol=1e-5, rtol=0.0)
    1e-06

This module imports only torch, so any floor (prune, bench, export) may use it.
"""

from __future__ import annotations

import torch

from ..errors import MhsaError


class ParityError(MhsaError):
    """Two runtimes' logits cannot be compared (shape, non-finite) or differ past the tolerance."""


def _check_finite(t: torch.Tensor, side: str, what: str) -> None:
    bad = ~torch.isfinite(t)
    if bad.any():
        n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        raise ParityError(f"{what}: the {side} logits are not finite ({n_nan} NaN, {n_inf} Inf of {t.numel()} "
                          "values); no gap can be measured")


def logit_gap(expected: torch.Tensor, actual: torch.Tensor, what: str = "logits") -> float:
    """The largest absolute difference of two logit tensors of one shape.

    Args:
        expected: reference logits, e.g. torch's ``(B, C)``.
        actual: the logits checked against them (same shape: nothing broadcasts).
        what: names the comparison in an error (``"ORT fp32 vs torch"``).

    Returns:
        ``max |actual - expected|`` as a float (0.0 for empty tensors).

    Raises:
        ParityError: the shapes differ (``(1, C)`` vs ``(B, C)`` included), or
            either side holds NaN or Inf.
    """
    expected, actual = torch.as_tensor(expected), torch.as_tensor(actual)
    if tuple(expected.shape) != tuple(actual.shape):
        raise ParityError(f"{what}: logits of shape {tuple(actual.shape)} where {tuple(expected.shape)} "
                          "was expected; shapes must match exactly")
    _check_finite(expected, "reference", what)
    _check_finite(actual, "compared", what)
    if not expected.numel():
        return 0.0
    diff = actual.detach().double().cpu() - expected.detach().double().cpu()
    return float(diff.abs().max())


def check_close(expected: torch.Tensor, actual: torch.Tensor, atol: float, rtol: float,
                what: str = "logits") -> float:
    """:func:`logit_gap`, then every element within ``atol + rtol * |expected|``.

    Args:
        expected: reference logits.
        actual: logits that must match them.
        atol: absolute tolerance (>= 0).
        rtol: tolerance relative to each reference logit's size (>= 0).
        what: names the comparison in an error.

    Returns:
        The largest absolute gap (for recording).

    Raises:
        ParityError: as :func:`logit_gap`, or an element past its tolerance
            (the message gives the largest gap, where, and the tolerance there).
    """
    gap = logit_gap(expected, actual, what)
    if not expected.numel():
        return gap
    e, a = expected.detach().double().cpu(), actual.detach().double().cpu()
    excess = (a - e).abs() - (atol + rtol * e.abs())  # > 0: past the tolerance
    if bool((excess > 0).any()):
        idx = tuple(int(i) for i in torch.unravel_index(torch.argmax(excess), excess.shape))
        raise ParityError(f"{what}: logits differ by up to {gap:.3g}; at {list(idx)} the gap "
                          f"{float((a - e).abs()[idx]):.3g} is past atol {atol:g} + rtol {rtol:g} x "
                          f"|{float(e[idx]):.3g}|")
    return gap
