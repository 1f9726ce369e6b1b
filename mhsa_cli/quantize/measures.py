"""What a quantized model holds: stored tensors, weight bytes, int8 / float parameter counts.

Works for float and dynamic-quantized models alike. :func:`float_parts` lists
what stays float (embeddings, positions, the CLS token, layer norms, the bias of
0-head layers, and the classifier with ``--no-classifier``) so nothing is
skipped silently.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .backend import QPARAM_SUFFIXES, backend_of

def export_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Tensors of a float or quantized model as they are stored in a checkpoint."""
    backend = backend_of(model)
    return backend.state(model) if backend else {k: v.detach() for k, v in model.state_dict().items()}


def model_weight_bytes(model: nn.Module) -> int:
    """In-memory bytes of the weights: float tensors x4, int8 weights x1 + scales.

    Works for float and dynamic-quantized models alike (the logical sizes; packed
    kernels may pad a little).
    """
    return state_bytes(export_state(model))


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"int8": elements stored as int8, "float": float parameter elements}``
    (scales and zero points are quantization metadata, not parameters)."""
    return state_counts(export_state(model))


def int8_fraction(model: nn.Module) -> float:
    """Fraction of the parameters (elements) stored as int8: 0.0 for a float model."""
    return fraction_of(parameter_counts(model))


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    """:func:`model_weight_bytes` of already exported tensors (:func:`export_state`)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def state_counts(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """:func:`parameter_counts` of already exported tensors (:func:`export_state`)."""
    counts = {"int8": 0, "float": 0}
    for k, t in state.items():
        if not k.endswith(QPARAM_SUFFIXES):
            counts["int8" if t.dtype == torch.int8 else "float"] += t.numel()
    return counts


def fraction_of(counts: dict[str, int]) -> float:
    """The int8 share of :func:`parameter_counts`' ``counts``."""
    return counts["int8"] / max(counts["int8"] + counts["float"], 1)


def float_parts(model: nn.Module) -> list[dict[str, Any]]:
    """What stays float: ``{"name", "type", "params"}`` per module (or loose parameter).

    torch layers (LayerNorm, Embedding, a float Linear) are listed by module;
    parameters held by our own modules (positions, CLS token, a 0-head layer's
    ``attn.o_bias``) by name.
    """
    qnames = set(backend.quantized_names(model)) if (backend := backend_of(model)) else set()
    parts = []
    for name, m in model.named_modules():
        own = list(m.named_parameters(recurse=False))
        if not own or name in qnames:
            continue
        if type(m).__module__.startswith("torch.nn"):  # a layer: LayerNorm, Embedding, float Linear
            parts.append({"name": name, "type": type(m).__name__, "params": sum(p.numel() for _, p in own)})
        else:
            parts += [{"name": f"{name}.{p_name}" if name else p_name, "type": "Parameter",
                       "params": p.numel()} for p_name, p in own]
    return parts
