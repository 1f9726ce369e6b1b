"""runtimes/parity.py: gaps that can fail (shapes, NaN/Inf, assert_close's element-wise rule), and
every place that records a gap (export, bench, head removal) going through it."""

from __future__ import annotations

import math

import pytest
import torch

from mhsa_cli.errors import MhsaError
from mhsa_cli.runtimes.parity import ParityError, check_close, logit_gap


def test_gap_is_the_largest_absolute_difference():
    e = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    a = torch.tensor([[1.25, -2.0, 0.5], [0.0, 2.5, -1.125]])  # gaps 0.25, 0.5, 0.125
    assert logit_gap(e, a) == 0.5
    assert logit_gap(torch.zeros(0, 3), torch.zeros(0, 3)) == 0.0
    assert issubclass(ParityError, MhsaError)  # the CLI prints it as one line, exit 2


def test_a_broadcast_shape_fails_where_abs_max_would_pass():
    ref = torch.tensor([[0.5, -0.5]] * 4)  # (B=4, C=2), every row alike
    one = ref[:1]  # (1, C): what a runtime that dropped the batch axis returns
    assert float((ref - one).abs().max()) == 0.0  # the old check: broadcasts, gap 0, passes
    with pytest.raises(ParityError, match=r"shape \(1, 2\) where \(4, 2\) was expected"):
        logit_gap(ref, one)
    with pytest.raises(ParityError, match="shape"):
        check_close(ref, ref.reshape(2, 4), atol=1.0, rtol=1.0)  # same numbers, other shape


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_nan_or_inf_fails_where_a_tolerance_would_pass(bad):
    ref = torch.zeros(2, 3)
    out = ref.clone()
    out[1, 2] = bad
    if math.isnan(bad):
        assert not (ref - out).abs().max() > 1e-4  # the old `gap > tolerance` let NaN through
    assert not (out - out).abs().max() > 1e-4  # and Inf on both sides (inf - inf = NaN)
    with pytest.raises(ParityError, match="compared logits are not finite"):
        logit_gap(ref, out)
    with pytest.raises(ParityError, match="reference logits are not finite"):
        check_close(out, ref, atol=1e9, rtol=1e9)
    with pytest.raises(ParityError, match="not finite"):
        logit_gap(out, out)  # NaN on both sides at the same place is no agreement


def test_check_close_is_element_wise_atol_plus_rtol():
    e = torch.tensor([[100.0, 0.0]])
    a = torch.tensor([[100.5, 0.2]])
    # element 0: 0.5 <= 0.1 + 0.01 x 100 = 1.1; element 1: 0.2 > 0.1 + 0.01 x 0 = 0.1
    with pytest.raises(ParityError, match=r"up to 0.5; at \[0, 1\] the gap 0.2 is past atol 0.1 \+ rtol 0.01"):
        check_close(e, a, atol=0.1, rtol=0.01)
    assert check_close(e, a, atol=0.25, rtol=0.01) == pytest.approx(0.5)  # 0.2 <= 0.25, 0.5 <= 1.25
    with pytest.raises(ParityError):
        check_close(e, a, atol=0.25, rtol=0.0)  # 0.5 > 0.25 without the relative part
    assert check_close(e, e, atol=0.0, rtol=0.0) == 0.0  # equal logits pass a zero tolerance


def test_bench_records_a_gap_and_refuses_nan_or_broadcast():
    from mhsa_cli.bench.entries import Entry, parity_gap

    x = torch.zeros(3, 5, dtype=torch.long)
    torch_model = lambda v: torch.ones(v.shape[0], 2)  # noqa: E731
    ok = Entry(None, lambda v: torch.ones(v.shape[0], 2) + 0.125, "m (ORT int8)", "m")
    assert parity_gap(torch_model, ok, x) == 0.125
    nan = Entry(None, lambda v: torch.full((v.shape[0], 2), math.nan), "m (ORT fp32)", "m")
    with pytest.raises(ParityError, match=r"bench row m \(ORT fp32\) vs torch: the compared logits are not finite"):
        parity_gap(torch_model, nan, x)
    flat = Entry(None, lambda v: torch.ones(1, 2), "m (ORT fp32)", "m")
    with pytest.raises(ParityError, match=r"shape \(1, 2\) where \(3, 2\)"):
        parity_gap(torch_model, flat, x)


def test_head_removal_refuses_nan_logits():
    from mhsa_cli.model import build_model, make_config
    from mhsa_cli.prune import remove_heads

    cfg = make_config("tokens", 8, 2, 10, 0, 2, 16, 2, 32, 0.0, "cls")
    model = build_model(cfg)
    with torch.no_grad():
        model.head.bias[1] = math.nan  # a corrupt classifier: every logit of class 1 is NaN
    with pytest.raises(ParityError, match="pruned vs head-gated original: the reference logits are not finite"):
        remove_heads(model, {0: [1]})
