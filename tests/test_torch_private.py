"""torch_private (mhsa_cli/quantize/torch_private.py): each private torch API of the int8 path against a
public oracle, so that a torch release that changes one fails here, by name, loudly."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

from mhsa_cli.quantize import torch_private as TP


def test_every_private_name_exists_in_this_torch():
    assert TP.missing() == [], f"torch {torch.__version__} lacks {TP.missing()}: update torch_private.py"


@pytest.mark.parametrize("per_channel", [False, True])
def test_make_qint8_weight_keeps_the_int8_values_and_quantization(per_channel):
    gen = torch.Generator().manual_seed(0)
    values = torch.randint(-128, 128, (5, 3), generator=gen, dtype=torch.int8)
    scale = torch.rand(5 if per_channel else 1, generator=gen) + 0.01
    zp = torch.randint(-5, 5, scale.shape, generator=gen)
    q = TP.make_qint8_weight(values, scale, zp, per_channel)
    assert q.dtype == torch.qint8 and torch.equal(q.int_repr(), values)
    # public oracle: dequantize = (int - zero point) * scale, per row or for the whole tensor
    expected = (values.float() - zp.float().view(-1, 1)) * scale.view(-1, 1)
    torch.testing.assert_close(q.dequantize(), expected)


def test_weight_bias_and_linear_dynamic_agree_with_torch_ao_and_the_float_layer():
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    with TP.quiet():
        q = quantize_dynamic(nn.Sequential(lin), {"0": default_dynamic_qconfig}, dtype=torch.qint8)[0]
    assert isinstance(q, TP.dynamic_linear_type())
    w, b = TP.weight_bias(q)
    assert w.dtype == torch.qint8 and w.shape == (8, 16)
    torch.testing.assert_close(b, lin.bias.detach())
    torch.testing.assert_close(w.dequantize(), lin.weight.detach(), atol=float(w.q_scale()), rtol=0)
    x = torch.randn(4, 16)
    torch.testing.assert_close(TP.linear_dynamic(x, q), q(x))  # the kernel torch.ao's forward calls
    torch.testing.assert_close(TP.linear_dynamic(x, q), lin(x), atol=0.05, rtol=0.05)  # int8 ~ float


def test_quiet_hides_only_the_known_notices():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with TP.quiet():
            for category, pattern in TP.KNOWN_WARNINGS:
                warnings.warn(re.sub(r"\\(.)", r"\1", pattern) + " (as torch says it)", category)
            warnings.warn("something else is deprecated", DeprecationWarning)
            warnings.warn("a quantization-related user warning torch may add", UserWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated",
                                              "a quantization-related user warning torch may add"]


def test_the_known_notices_are_what_torch_prints_today():
    """If torch rewords a notice, KNOWN_WARNINGS stops matching it: this test says so."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quantize_dynamic(nn.Sequential(nn.Linear(4, 4)), {"0": default_dynamic_qconfig}, dtype=torch.qint8)
        TP.make_qint8_weight(torch.zeros(2, 2, dtype=torch.int8), torch.ones(1), torch.zeros(1, dtype=torch.long),
                             False)
    unknown = [f"{w.category.__name__}: {str(w.message)[:80]}" for w in seen
               if issubclass(w.category, (DeprecationWarning, FutureWarning, UserWarning))
               and not any(issubclass(w.category, c) and re.match(p, str(w.message)) for c, p in TP.KNOWN_WARNINGS)]
    assert not unknown, f"torch {torch.__version__} warns about the int8 path in new words: {unknown}"
