"""torch -> ONNX (fp32) and ONNX -> dynamic int8 (onnxruntime.quantization), and graph facts.

Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``),
measured against the dynamo exporter on the d=256 default model: 0.25 s vs 4.5 s
to export, the same ORT latency after ORT's graph optimisation (342 vs 353 us at
batch 1, 119 vs 114 nodes), both with dynamic batch and sequence axes and logits
within 6e-7 of torch; it needs no onnxscript. The model's one forward
(``MHSAClassifier.forward``, SDPA with a boolean padding mask) is exported as is.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import MhsaError
from ..runtimes.folder import INPUT_NAME, OUTPUT_NAME
from .lean import ATTENTION_OP, OPSET, lean_export

DYNAMO = False  # see the module docstring
QKV = ("q", "k", "v")
INT8_OPS = ("DynamicQuantizeLinear", "MatMulInteger")  # what makes an int8 graph really int8


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int,
            fuse_attention: bool = True) -> dict[str, Any]:
    """Export ``model`` (eval, CPU) to ``path`` with dynamic batch and sequence axes.

    Args:
        model: an :class:`~mhsa_cli.model.MHSAClassifier` (float).
        example: one input batch (B, T) or (B, T, F), used for tracing.
        path: the ``.onnx`` file to write.
        opset: ONNX opset (>= 14: scaled_dot_product_attention).
        fuse_attention: each layer's attention as one ``com.microsoft.MultiHeadAttention``
            node, else standard ONNX ops (:mod:`.lean`: the forward traced).

    Returns:
        What was used: exporter, opset, dynamic axes, attention layers fused.
    """
    axes = {INPUT_NAME: {0: "batch", 1: "sequence"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad(), lean_export(model.eval(), fuse_attention) as (lean, fused):
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
                          do_constant_folding=True, custom_opsets=OPSET if fused else None)
    return {"exporter": "torch.onnx.export (TorchScript)", "dynamo": DYNAMO, "opset": opset,
            "dynamic_axes": {"batch": True, "sequence": True},
            "fused_attention_layers": fused, "attention_op": ATTENTION_OP if fused else None}


def _linear_after(node: Any, consumers: dict[str, list[Any]], inits: dict[str, Any]) -> tuple[Any, str] | None:
    """The ``Add`` of a bias initializer that alone consumes ``node``'s output (a Linear's bias), or None."""
    users = consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Add":
        return None
    rest = [i for i in users[0].input if i != node.output[0]]
    return (users[0], rest[0]) if len(rest) == 1 and rest[0] in inits else None


def _qkv_groups(graph: Any, inits: dict[str, Any]) -> list[tuple[str, dict[str, tuple[Any, Any, str]]]]:
    """Per shared input of an attention layer's projections: for each of q, k, v that reads it,
    (MatMul node, bias Add node, bias name). Two or more per input (q|k|v; k|v in a last block that
    computes the pooled row alone, whose q reads that row only)."""
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    groups: dict[str, dict[str, tuple[Any, Any, str]]] = {}
    for n in graph.node:
        tag = next((t for t in QKV if f"/attn/{t}/" in n.name), None)
        bias = _linear_after(n, consumers, inits) if n.op_type == "MatMul" and n.input[1] in inits else None
        if tag and bias:
            groups.setdefault(n.input[0], {})[tag] = (n, *bias)
    return [(x, g) for x, g in groups.items() if len(g) >= 2]


def fuse_qkv(path: Path) -> int:
    """Rewrite ``path`` so the q, k and v projections that share an input are one product.

    ``x @ [Wq | Wk | Wv] + [bq | bk | bv]``, then ``Split`` into the original
    outputs: the same numbers (logits bitwise equal on the quickstart models),
    one (int8: one ``DynamicQuantizeMatMul``) instead of three kernel calls.
    A last block that computes only the pooled row fuses k|v (its q reads one
    row). Measured, ORT int8, 1 thread, batch 1: 0.93x the latency of the
    unfused graph (student and baseline); batch 32: 0.98-1.03x. 0-head layers
    have no projections and are left alone.

    Returns:
        The number of fused products (one per layer with q|k|v or k|v).
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    groups = _qkv_groups(g, inits)
    for x, grp in groups:
        tags = [t for t in QKV if t in grp]
        first = grp[tags[0]][0].name
        pre = first.rsplit(f"/{tags[0]}/", 1)[0] + "/" + "".join(tags)
        w = [numpy_helper.to_array(inits[grp[t][0].input[1]]) for t in tags]  # (D, H*S) each
        b = [numpy_helper.to_array(inits[grp[t][2]]) for t in tags]
        g.initializer.extend([numpy_helper.from_array(np.concatenate(w, 1), pre + ".weight"),
                              numpy_helper.from_array(np.concatenate(b, 0), pre + ".bias"),
                              numpy_helper.from_array(np.array([a.shape[1] for a in w], np.int64), pre + ".split")])
        new = [helper.make_node("MatMul", [x, pre + ".weight"], [pre + "/mm"], name=pre + "/MatMul"),
               helper.make_node("Add", [pre + "/mm", pre + ".bias"], [pre + "/add"], name=pre + "/Add"),
               helper.make_node("Split", [pre + "/add", pre + ".split"], [grp[t][1].output[0] for t in tags],
                                name=pre + "/Split", axis=-1)]
        old = [grp[t][i] for t in tags for i in (0, 1)]
        at = min(list(g.node).index(n) for n in old)
        for n in old:
            g.node.remove(n)
        for k, n in enumerate(new):
            g.node.insert(at + k, n)
    used = {i for n in g.node for i in n.input}
    for i in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(i)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(groups)


@contextlib.contextmanager
def pre_processed(src: Path, dst: Path) -> Iterator[Path]:
    """ORT's ``quant_pre_process`` of ``src`` (symbolic shape inference + basic graph optimisation)
    into a scratch file beside ``dst``, deleted afterwards; ORT's notices silenced inside."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # auto_merge: the CLS token makes the sequence axis "sequence + 1" inside the graph;
            # without it symbolic inference stops ("Incomplete symbolic shape inference")
            quant_pre_process(str(src), str(pre), skip_optimization=False, skip_onnx_shape=False,
                              skip_symbolic_shape=False, auto_merge=True)
            yield pre
    finally:
        pre.unlink(missing_ok=True)


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

    with pre_processed(src, dst) as pre:
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=reduce_range)
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


INT8_STATIC_OPS = ("QuantizeLinear", "DequantizeLinear")  # what static (QDQ) quantization must leave


def check_int8_graph(counts: dict[str, int], where: Path, method: str = "dynamic") -> None:
    """Raise if a quantized graph lacks the integer ops (nothing was quantized)."""
    missing = [op for op in (INT8_OPS if method == "dynamic" else INT8_STATIC_OPS) if not counts.get(op)]
    if missing:
        raise MhsaError(f"{where}: ORT {method} quantization left no {', '.join(missing)} nodes")
