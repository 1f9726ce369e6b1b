"""Checkpoint kinds: weights checked against the JSON, and the ``float`` kind (``int8`` lives in
:mod:`mhsa_cli.quantize.kind`, which this package never imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from ..errors import MhsaError
from ..model import MHSAClassifier, ModelConfig, build_model
from ..registry import CHECKPOINT_KINDS

if TYPE_CHECKING:
    from .io import Checkpoint


@dataclass(frozen=True)
class CheckpointKind:
    """A kind of checkpoint, registered in :data:`mhsa_cli.registry.CHECKPOINT_KINDS`.

    ``check(ckpt)`` compares the weights with the JSON (raises :class:`MhsaError`
    without the path prefix); ``load(ckpt)`` rebuilds the model in eval mode on CPU.
    """

    name: str
    check: Callable[["Checkpoint"], None]
    load: Callable[["Checkpoint"], nn.Module]


def expected_state(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict a float model of ``config`` has, on the meta device (shapes, no memory)."""
    with torch.device("meta"):
        return dict(build_model(config).state_dict())


def check_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                  head_dim: int | None = None) -> None:
    """Names, shapes and floating dtypes of ``tensors`` exactly as ``expected`` (a meta state dict).

    Raises:
        MhsaError: the first disagreement; a head count that contradicts the weights is
            named as such (layer, heads in the JSON, heads the weights hold).
    """
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise MhsaError(f"weights disagree with the JSON architecture ({what})")
    for k, v in expected.items():
        got = tuple(tensors[k].shape)
        if got != tuple(v.shape):
            raise MhsaError(_shape_problem(k, got, tuple(v.shape), head_dim))
        if not tensors[k].is_floating_point():
            raise MhsaError(f"{k} is {tensors[k].dtype}, expected a floating-point tensor")


def _shape_problem(key: str, got: tuple[int, ...], want: tuple[int, ...], head_dim: int | None) -> str:
    parts = key.split(".")
    # q.weight is (H_l * head_dim, d_model): its rows say how many heads the weights hold
    if (head_dim and parts[0] == "blocks" and parts[2:] == ["attn", "q", "weight"] and len(got) == 2
            and got[1:] == want[1:] and got[0] % head_dim == 0):
        said, held = want[0] // head_dim, got[0] // head_dim
        return (f"layer {parts[1]}: the JSON says {said} head{'s' * (said != 1)} but the weights hold "
                f"{held} ({key}: {got})")
    return f"weights disagree with the JSON architecture ({key}: file {got}, JSON {want})"


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or Inf in any floating-point tensor (they would be benchmarked or crash quantize).

    Raises:
        MhsaError: names the first tensor and how many values are not finite.
    """
    for name, t in tensors.items():
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise MhsaError(f"weight {name} holds {bad:,} NaN/Inf value{'s' * (bad > 1)} "
                                "(a diverged or damaged model)")


def _check_float(ckpt: Checkpoint) -> None:
    config = ckpt.model_config
    check_tensors(ckpt.tensors, expected_state(config), config.head_dim)


def _load_float(ckpt: Checkpoint) -> nn.Module:
    model = build_model(ckpt.model_config)
    load_state(model, ckpt.tensors, ckpt.path)
    return model.eval()


CHECKPOINT_KINDS.register("float", CheckpointKind("float", _check_float, _load_float))
KINDS = CHECKPOINT_KINDS  # kind name -> CheckpointKind (int8 is registered by mhsa_cli.quantize.kind)


def load_state(model: MHSAClassifier, tensors: dict[str, torch.Tensor], where: Any) -> None:
    """Strict state-dict load with a one-line error on any mismatch (:func:`check_tensors`)."""
    try:
        check_tensors(tensors, model.state_dict(), model.config.head_dim)
    except MhsaError as exc:
        raise MhsaError(f"checkpoint {where}: {exc}") from None
    model.load_state_dict(tensors, strict=True)
