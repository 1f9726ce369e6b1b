"""torch -> ONNX (fp32) and ONNX -> dynamic int8 (onnxruntime.quantization), and graph facts.

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``),
measured against the dynamo exporter on the d=256 default model: 0.25 s vs 4.5 s
to export, the same ORT latency after ORT's graph optimisation (342 vs 353 us at
batch 1, 119 vs 114 nodes), both with dynamic batch and sequence axes and logits
within 6e-7 of torch; it needs no onnxscript. The model's one forward
(``MHSAClassifier.forward``, SDPA with a boolean padding mask) is exported as is.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MhsaError
from ..runtimes.folder import INPUT_NAME, OUTPUT_NAME
from .lean import ATTENTION_OP, OPSET, lean_export

DYNAMO = False  # see the module docstring
INT8_OPS = ("DynamicQuantizeLinear", "MatMulInteger")  # what makes an int8 graph really int8


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int,
            fuse_attention: bool = True, fuse_qkv: bool = True) -> dict[str, Any]:
    """Export ``model`` (eval, CPU) to ``path`` with dynamic batch and sequence axes.

    Args:
        model: an :class:`~mhsa_cli.model.MHSAClassifier` (float).
        example: one input batch (B, T) or (B, T, F), used for tracing.
        path: the ``.onnx`` file to write.
        opset: ONNX opset (>= 14: scaled_dot_product_attention).
        fuse_attention: each layer's attention as one ``com.microsoft.MultiHeadAttention``
            node, else standard ONNX ops (:mod:`.lean`: the forward traced).
        fuse_qkv: each layer's q, k and v projections as one product (k|v where the last block
            computes the pooled row alone), stacked in the traced module (:mod:`.lean`).

    Returns:
        What was used: exporter, opset, dynamic axes, layers with fused attention / fused q|k|v.
    """
    axes = {INPUT_NAME: {0: "batch", 1: "sequence"}, OUTPUT_NAME: {0: "batch"}}
    lean_ctx = lean_export(model.eval(), fuse_attention, fuse_qkv)
    with warnings.catch_warnings(), torch.no_grad(), lean_ctx as (lean, fused):
        # known notices only: tracing the max_len check, the TorchScript exporter's deprecation, a Slice
        # (chosen on purpose: 0.25 s vs 4.5 s for dynamo, same ORT graph after optimisation)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        # F.pad's pads reach the graph through a reversed Slice the exporter cannot fold; ORT folds it
        # (one Pad node in the session's graph)
        warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(lean, (example,), str(path), dynamo=DYNAMO, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          do_constant_folding=True, custom_opsets=OPSET if fused["fused_attention_layers"] else None)
    return {"exporter": "torch.onnx.export (TorchScript)", "dynamo": DYNAMO, "opset": opset,
            "dynamic_axes": {"batch": True, "sequence": True},
            **fused, "attention_op": ATTENTION_OP if fused["fused_attention_layers"] else None}


def quantize_onnx(src: Path, dst: Path, reduce_range: bool, per_channel: bool) -> dict[str, Any]:
    """Dynamic int8 of an fp32 ONNX file, ORT's recommended way.

    ``quant_pre_process`` (symbolic shape inference + ORT's basic graph
    optimisation) first, then ``quantize_dynamic`` in the QOperator format:
    int8 weights (``QInt8``), activations quantized per call by
    ``DynamicQuantizeLinear`` and multiplied with ``MatMulInteger``.

    Returns:
        The settings used (recorded in export.json).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # auto_merge: the CLS token makes the sequence axis "sequence + 1" inside the graph;
            # without it symbolic inference stops ("Incomplete symbolic shape inference")
            quant_pre_process(str(src), str(pre), skip_optimization=False, skip_onnx_shape=False,
                              skip_symbolic_shape=False, auto_merge=True)
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range)
    finally:
        pre.unlink(missing_ok=True)
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "pre_process": "quant_pre_process (auto_merge)",
            "format": "QOperator", "weight_type": "QInt8", "activations": "uint8, dynamic per call",
            "per_channel": per_channel, "reduce_range": reduce_range}


def op_counts(path: Path) -> dict[str, int]:
    """Node count per op type of an ONNX file (sorted by name)."""
    import onnx

    return dict(sorted(Counter(n.op_type for n in onnx.load(str(path)).graph.node).items()))


def optimized_op_counts(path: Path, threads: int) -> dict[str, int]:
    """Op counts of the graph ORT actually runs (after ``ORT_ENABLE_ALL``): its fusions show here."""
    import tempfile

    import onnxruntime as ort

    from ..runtimes.onnxruntime import session_options

    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads)
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return op_counts(Path(so.optimized_model_filepath))


def check_int8_graph(counts: dict[str, int], where: Path) -> None:
    """Raise if a quantized graph lacks the integer ops (nothing was quantized)."""
    missing = [op for op in INT8_OPS if not counts.get(op)]
    if missing:
        raise MhsaError(f"{where}: ORT dynamic quantization left no {', '.join(missing)} nodes")
