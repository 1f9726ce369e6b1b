"""torch -> ONNX (fp32) and ONNX -> dynamic int8 (onnxruntime.quantization), and graph facts.

Exporters (``--exporter``, :data:`EXPORTERS`), both tracing :mod:`.lean`'s forward, with
dynamic batch and sequence axes, q|k|v stacked and one MultiHeadAttention node per layer:

* ``dynamo`` (default): ``torch.onnx.export(..., dynamo=True)``, ``torch.export`` +
  onnxscript, the exporter torch develops. Measured on a 2-layer d=32 cls model: 56 nodes
  where TorchScript wrote 95 (no Constant nodes: onnxscript's optimiser folds them), 46 vs 45 in
  ORT's optimised graph (the one more: ``sequence + 1`` for the position rows is computed from
  the input's shape with Squeeze/Add/Reshape, TorchScript read it off the padded ids), the same
  int8 products; logits within 2e-7 of torch. ORT, 1 thread, d=64 2-layer, p50 (loaded 2-core
  machine, two runs): batch 1 fp32 147-158 vs 143-152 us (+3 %), int8 equal (141-150 us); batch 32
  within 1 %. ~4.5 s to export (TorchScript 0.15 s: torch.export and its decompositions), and it
  needs onnxscript.
* ``torchscript``: ``torch.onnx.export(..., dynamo=False)``, the fallback: deprecated by torch
  (its notices are silenced here) and to be removed; opset <= 20.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import MhsaError
from ..runtimes.folder import INPUT_NAME, OUTPUT_NAME
from .lean import lean_export
from .ops import ATTENTION_OP, OPSET, translation_table

INT8_OPS = ("DynamicQuantizeLinear", "MatMulInteger")  # what makes an int8 graph really int8


def _torchscript(lean: nn.Module, example: torch.Tensor, path: Path, opset: int, fused: bool) -> None:
    """The TorchScript exporter (fallback), its known notices silenced."""
    axes = {INPUT_NAME: {0: "batch", 1: "sequence"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():
        # known notices only: tracing the max_len check, the exporter's deprecation, a Slice
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        # F.pad's pads reach the graph through a reversed Slice the exporter cannot fold; ORT folds it
        # (one Pad node in the session's graph)
        warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(lean, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          do_constant_folding=True, custom_opsets=OPSET if fused else None)


def _dynamo(lean: nn.Module, example: torch.Tensor, path: Path, opset: int, fused: bool) -> None:
    """The ``torch.export``-based exporter; the sequence axis is dynamic up to the model's max_len."""
    try:
        import onnxscript  # noqa: F401 (the exporter's own message names no package)
    except ImportError:
        raise MhsaError("the dynamo exporter needs onnxscript: pip install onnxscript (or use --exporter "
                        "torchscript)") from None
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence", max=lean.m.config.max_len)}
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch's own pytree notice, raised inside torch.export
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
            torch.onnx.export(lean, (example,), str(path), dynamo=True, opset_version=opset, external_data=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes={"x": dims},
                              custom_translation_table=translation_table(), verbose=False)
    finally:
        quiet.setLevel(level)


EXPORTERS: dict[str, Callable[[nn.Module, torch.Tensor, Path, int, bool], None]] = {
    "dynamo": _dynamo, "torchscript": _torchscript}
# the ONNX opsets each writes (dynamo: 18, torchlib's lowest, and up; below it onnx's version converter fails
# on Pad and LayerNormalization, logs it and leaves the file at 18)
OPSETS = {"dynamo": (18, 23), "torchscript": (14, 20)}


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int, fuse_attention: bool = True,
            fuse_qkv: bool = True, exporter: str = "dynamo") -> dict[str, Any]:
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
        exporter: a key of :data:`EXPORTERS`.

    Returns:
        What was used: exporter, opset, dynamic axes, layers with fused attention / fused q|k|v.

    Raises:
        MhsaError: the dynamo exporter without onnxscript installed.
    """
    with torch.no_grad(), lean_export(model.eval(), fuse_attention, fuse_qkv, exporter) as (lean, fused):
        EXPORTERS[exporter](lean, example, path, opset, fused["fused_attention_layers"] > 0)
    return {"exporter": exporter, "dynamo": exporter == "dynamo", "opset": opset,
            "dynamic_axes": {"batch": True, "sequence": True},
            **fused, "attention_op": ATTENTION_OP if fused["fused_attention_layers"] else None}


def _pre_process(src: Path, pre: Path) -> str:
    """ORT's quantization pre-processing (shape inference + basic graph optimisation); returns what ran.

    ORT's symbolic shape inference cannot follow a reduction whose axes are an input (opset >= 18:
    ReduceMax of max pooling, a TypeError inside it); then ONNX's own shape inference is used alone
    (measured on a meanmax-pooled model: the same int8 products, 36 nodes in ORT's graph vs 39 at opset 17).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # auto_merge: the CLS token makes the sequence axis "sequence + 1" inside the graph;
    # without it symbolic inference stops ("Incomplete symbolic shape inference")
    try:
        quant_pre_process(str(src), str(pre), skip_optimization=False, skip_onnx_shape=False,
                          skip_symbolic_shape=False, auto_merge=True)
        return "quant_pre_process (auto_merge)"
    except Exception as exc:  # noqa: BLE001 (ORT's inference fails with TypeError, AssertionError, ...)
        reason = f"{type(exc).__name__}: {exc}"[:120]
    quant_pre_process(str(src), str(pre), skip_optimization=False, skip_onnx_shape=False, skip_symbolic_shape=True)
    return f"quant_pre_process (ONNX shape inference only; ORT's symbolic inference failed: {reason})"


@contextlib.contextmanager
def pre_processed(src: Path, dst: Path) -> Iterator[tuple[Path, str]]:
    """(scratch file, what ran): :func:`_pre_process` of ``src`` into a file beside ``dst``, deleted
    afterwards; ORT's notices silenced inside."""
    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield pre, _pre_process(src, pre)
    finally:
        pre.unlink(missing_ok=True)


def quantize_onnx(src: Path, dst: Path, reduce_range: bool, per_channel: bool) -> dict[str, Any]:
    """Dynamic int8 of an fp32 ONNX file, ORT's recommended way.

    ``quant_pre_process`` (:func:`_pre_process`) first, then ``quantize_dynamic`` in the QOperator
    format: int8 weights (``QInt8``), activations quantized per call by ``DynamicQuantizeLinear`` and
    multiplied with ``MatMulInteger``.

    Returns:
        The settings used (recorded in export.json).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    ops = [op for op in IntegerOpsRegistry if op != "Gather"]  # embedding tables: one scale per row, after
    with pre_processed(src, dst) as (pre, how):
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=reduce_range, op_types_to_quantize=ops)
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "pre_process": how,
            "format": "QOperator", "weight_type": "QInt8", "activations": "uint8, dynamic per call",
            "per_channel": per_channel, "reduce_range": reduce_range, "ops": ops}


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


INT8_STATIC_OPS = ("QuantizeLinear", "DequantizeLinear")  # what static (QDQ) quantization must leave


def check_int8_graph(counts: dict[str, int], where: Path, method: str = "dynamic") -> None:
    """Raise if a quantized graph lacks the integer ops (nothing was quantized)."""
    missing = [op for op in (INT8_OPS if method == "dynamic" else INT8_STATIC_OPS) if not counts.get(op)]
    if missing:
        raise MhsaError(f"{where}: ORT {method} quantization left no {', '.join(missing)} nodes")
