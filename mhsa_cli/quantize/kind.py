"""The ``int8`` checkpoint kind: registered with :mod:`mhsa_cli.checkpoint` (which never imports
this package) through :data:`mhsa_cli.registry.CHECKPOINT_KINDS`.

``check`` compares an int8 checkpoint's tensors with its JSON without building a
quantized model: the float model of the JSON architecture on the meta device
gives every shape; each quantized Linear (``extra.quantization.modules``) must
hold ``weight`` int8 (out, in), ``weight_scale`` float32 and ``weight_zero_point``
int64 of shape (1,) or (out,) for per-channel, and a float ``bias`` (out,); each
int8 embedding table (``extra.quantization.embeddings``) ``weight`` int8 (V, D) and
``weight_scale`` float32 (V, 1); every other tensor is as in a float checkpoint. ``load`` is :func:`rebuild_quantized`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointKind, check_tensors, expected_state
from ..errors import MhsaError
from ..registry import CHECKPOINT_KINDS
from .backend import QPARAM_SUFFIXES, rebuild_quantized, settings_of


def check_int8(ckpt: Any) -> None:
    """The int8 tensors, scales and float rest of ``ckpt`` against its JSON.

    Raises:
        MhsaError: malformed ``extra.quantization``, a listed module that is not a Linear,
            a missing/unexpected tensor, a wrong shape or dtype, or a scale <= 0.
    """
    try:
        settings = settings_of(ckpt)
    except MhsaError as exc:  # strip settings_of's own path prefix: load_checkpoint adds it
        raise MhsaError(str(exc).split(": ", 1)[-1].removeprefix("checkpoint.json: ")) from None
    config = ckpt.model_config
    expected = expected_state(config)
    float_part = dict(expected)
    quant: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    qshape_of = (lambda out: (out,)) if settings["per_channel"] else (lambda out: (1,))
    for name in settings["modules"]:
        weight = expected.get(f"{name}.weight")
        if weight is None or weight.dim() != 2:
            raise MhsaError(f"quantized module '{name}' is not a Linear layer of this architecture")
        out = weight.shape[0]
        del float_part[f"{name}.weight"]
        quant[f"{name}.weight"] = (tuple(weight.shape), torch.int8)
        quant[name + QPARAM_SUFFIXES[0]] = (qshape_of(out), torch.float32)
        quant[name + QPARAM_SUFFIXES[1]] = (qshape_of(out), torch.int64)
    for name in settings.get("embeddings", []):
        rows, width = _embedding_shape(config, name)
        del float_part[f"{name}.weight"]
        quant[f"{name}.weight"] = ((rows, width), torch.int8)
        quant[name + QPARAM_SUFFIXES[0]] = ((rows, 1), torch.float32)
    tensors = ckpt.tensors
    for key, (shape, dtype) in quant.items():
        t = tensors.get(key)
        if t is None:
            raise MhsaError(f"weights disagree with the JSON architecture (missing {key})")
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise MhsaError(f"weights disagree with the JSON architecture ({key}: file {tuple(t.shape)} "
                            f"{t.dtype}, JSON {shape} {dtype})")
        if key.endswith(QPARAM_SUFFIXES[0]) and torch.isfinite(t).all() and (t <= 0).any():
            raise MhsaError(f"{key}: scales must be > 0")
    check_tensors({k: v for k, v in tensors.items() if k not in quant}, float_part, config.head_dim)



def _embedding_shape(config: Any, name: str) -> tuple[int, int]:
    """(V, D) of embedding ``name`` in the JSON architecture (built on the meta device)."""
    from ..model import build_model

    with torch.device("meta"):
        model = build_model(config)
    try:
        m = model.get_submodule(name)
    except AttributeError:
        m = None
    if type(m) is not nn.Embedding:
        raise MhsaError(f"int8 embedding '{name}' is not an Embedding layer of this architecture")
    return m.num_embeddings, m.embedding_dim


INT8 = CHECKPOINT_KINDS.register("int8", CheckpointKind("int8", check_int8, rebuild_quantized))
