"""Every private or deprecated torch API the int8 path uses, in one place.

Saving and rebuilding int8 checkpoints without pickle needs a few torch
internals that have no public equivalent in eager mode:

* :func:`make_qint8_weight` -- ``torch._make_per_tensor_quantized_tensor`` and
  ``torch._make_per_channel_quantized_tensor``: a quantized tensor from stored
  int8 values, scales and zero points (the public ``quantize_per_*`` would
  re-quantize floats, not take our int8 values as they are);
* :func:`weight_bias` -- ``DynamicLinear._weight_bias()``: unpack the int8 weight and
  float bias of a packed dynamic Linear;
* :func:`linear_dynamic` -- ``torch.ops.quantized.linear_dynamic`` on
  ``module._packed_params._packed_params``: the int8 kernel itself, called without
  torch.ao's per-call Python checks;
* :func:`dynamic_linear_type` -- ``torch.ao.nn.quantized.dynamic.Linear``, deprecated
  (torch.ao.quantization is to move to torchao) but the fast eager path.

:func:`missing` lists which of them this torch lacks; ``tests/test_torch_private.py``
exercises each one against a public oracle, so a torch release that changes them
fails that test by name instead of breaking checkpoints at load time.

:func:`quiet` hides only the deprecation notices torch prints for these
(:data:`KNOWN_WARNINGS`), not every warning.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import cache
from typing import Iterator

import torch
from torch import nn

# (category, regex matched at the start of the message): torch's notices about the APIs above.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor "
                  r"creation functions"),
)
PRIVATE_NAMES = ("torch._make_per_tensor_quantized_tensor", "torch._make_per_channel_quantized_tensor",
                 "torch.ops.quantized.linear_dynamic", "torch.ao.nn.quantized.dynamic.Linear._weight_bias",
                 "torch.ao.nn.quantized.dynamic.Linear._packed_params")


@contextmanager
def quiet() -> Iterator[None]:
    """Hide torch's known deprecation notices of the int8 path (:data:`KNOWN_WARNINGS`) for the block.

    Users cannot act on them; any other warning still shows.
    """
    with warnings.catch_warnings():
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@cache
def dynamic_linear_type() -> type:
    """torch.ao's dynamic int8 Linear class (imported quietly: the module is deprecated)."""
    with quiet():
        from torch.ao.nn.quantized.dynamic import Linear
    return Linear


def linear_dynamic(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The dynamic int8 kernel of a packed Linear ``module``: (..., in) float -> (..., out) float.

    Activations are quantized per call (quint8, ``reduce_range=True`` as torch.ao does for qint8).
    """
    return torch.ops.quantized.linear_dynamic(x, module._packed_params._packed_params, True)


def weight_bias(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(qint8 weight (out, in), float bias (out,) or None) of a packed dynamic Linear."""
    with quiet():
        return module._weight_bias()


def make_qint8_weight(values: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                      per_channel: bool) -> torch.Tensor:
    """A qint8 tensor holding exactly ``values`` (int8 (out, in)) with the given quantization.

    Args:
        values: int8 (out, in).
        scale: float (1,) or, per channel, (out,).
        zero_point: int64, same shape as ``scale``.
        per_channel: scales per output row (axis 0) instead of one.
    """
    with quiet():
        if per_channel:
            return torch._make_per_channel_quantized_tensor(values, scale.double(), zero_point, 0)
        return torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))


def missing() -> list[str]:
    """The names of :data:`PRIVATE_NAMES` this torch does not have (empty: all present)."""
    out = []
    for name in PRIVATE_NAMES:
        try:
            if name.endswith("._packed_params"):
                linear = dynamic_linear_type()(2, 2, dtype=torch.qint8)
                getattr(linear._packed_params, "_packed_params")
            elif name.startswith("torch.ao.nn"):
                getattr(dynamic_linear_type(), name.rsplit(".", 1)[1])
            elif name.startswith("torch.ops"):
                torch.ops.quantized.linear_dynamic  # noqa: B018 (a lookup that raises if absent)
            else:
                getattr(torch, name.split(".", 1)[1])
        except (AttributeError, RuntimeError, ImportError):
            out.append(name)
    return out
