"""ONNX Runtime int8 variants and the quality gate that picks one.

Two ways to make an int8 graph from the fp32 export (``INT8_METHODS``):

* ``dynamic`` -- :func:`mhsa_cli.export.onnx.quantize_onnx`: int8 weights,
  activations quantized per call (``DynamicQuantizeLinear`` + ``MatMulInteger``);
  needs no data.
* ``static`` -- :func:`quantize_static_qdq`: int8 weights and activations with
  scales fixed in advance from calibration batches of the **validation** split
  (never test), written in the QDQ format (``QuantizeLinear`` /
  ``DequantizeLinear`` pairs around each MatMul, which ORT fuses into integer
  kernels). Needs data.

Both then store each large embedding table as int8 with one scale per row
(:func:`int8_embeddings`, weight-only: the rows a batch gathers are scaled back to
float). The tables are most of a small encoder's file (MiniLM's word table: 30,522 x
384), and ORT's own int8 ``Gather`` takes one scale for the whole table.

Either can collapse on some models, so :func:`gate` measures each on the
validation split (accuracy against fp32, and ORT latency at batch 1 and 32) and
keeps the fastest whose accuracy is within ``max_drop`` points of fp32.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..quantize.rowwise import EMBED_MIN_ELEMENTS, rowwise_int8

CALIBRATION_ROWS, CALIBRATION_BATCH = 256, 32  # validation rows for static calibration, per batch
GATE_BATCHES = (1, 32)  # the gate's latency is the geometric mean of the p50s at these batch sizes


def calibration_batches(split: Any, rows: int = CALIBRATION_ROWS, batch: int = CALIBRATION_BATCH) -> list[np.ndarray]:
    """Validation rows as ``batch``-row arrays (a ragged split's batches cut to their longest row)."""
    n = min(rows, len(split))
    out = []
    for start in range(0, n, batch):
        x, _ = split.rows(torch.arange(start, min(n, start + batch)))
        out.append(x.numpy())
    return out


def quantize_static_qdq(src: Path, dst: Path, batches: list[np.ndarray], per_channel: bool,
                        input_name: str = "input") -> dict[str, Any]:
    """Static int8 (QDQ) of an fp32 ONNX file, calibrated (MinMax) on ``batches``.

    Only MatMul nodes are quantized (the products; LayerNorm, softmax and GELU stay
    float, as in the dynamic graph).

    Returns:
        The settings used (recorded in export.json).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from .onnx import pre_processed

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{input_name: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    try:
        with pre_processed(src, dst) as (pre, how):
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul"], per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    finally:
        for extra in dst.parent.glob("augmented_model*.onnx"):  # the calibrator's scratch graph
            extra.unlink(missing_ok=True)
    return {"tool": "onnxruntime.quantization.quantize_static", "pre_process": how,
            "format": "QDQ", "weight_type": "QInt8", "activations": "uint8, static scales (MinMax calibration)",
            "calibration": f"{sum(len(b) for b in batches)} validation rows in {len(batches)} batches",
            "ops": ["MatMul"], "per_channel": per_channel}


def _embedding_tables(graph: Any) -> list[tuple[Any, Any]]:
    """(Gather node, its fp32 (V, D) initializer) for each table worth storing as int8.

    Only a table the Gather alone reads (along axis 0) qualifies: a weight tied elsewhere stays float.
    """
    from collections import Counter

    from onnx import TensorProto

    inits = {t.name: t for t in graph.initializer}
    reads = Counter(i for n in graph.node for i in n.input) + Counter(o.name for o in graph.output)
    out = []
    for node in graph.node:
        t = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (t is not None and t.data_type == TensorProto.FLOAT and len(t.dims) == 2 and axis == 0
                and t.dims[0] * t.dims[1] >= EMBED_MIN_ELEMENTS and reads[t.name] == 1):
            out.append((node, t))
    return out


def int8_embeddings(path: Path) -> dict[str, Any]:
    """Store each large embedding table of an ONNX file as int8 with one scale per row, in place.

    ``Gather(table, ids)`` becomes ``Cast(Gather(q, ids), float) * Gather(scale, ids)`` with q (V, D)
    int8 and scale (V, 1) from :func:`~mhsa_cli.quantize.rowwise.rowwise_int8` (symmetric, max |row| /
    127), so each gathered value is off by at most scale / 2. Four standard ops, no custom kernel.

    Returns:
        ``{"embeddings": {"tables": [name, ...], "scheme": ..., "max_abs_error": float}}`` (export.json).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    tables, worst = [], 0.0
    for node, t in _embedding_tables(g):
        w = torch.from_numpy(numpy_helper.to_array(t).copy())  # (V, D)
        qt, st = rowwise_int8(w)  # the formula torch's int8 checkpoints use (mhsa quantize)
        q, scale = qt.numpy(), st.numpy()
        worst = max(worst, float((qt * st - w).abs().max()))
        name, ids, out = t.name, node.input[1], node.output[0]
        g.initializer.remove(t)
        g.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                              numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")])
        at = list(g.node).index(node)
        g.node.remove(node)
        for k, new in enumerate([
                helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_int8"], name=f"{node.name}_int8"),
                helper.make_node("Gather", [f"{name}_scale", ids], [f"{out}_scale"], name=f"{node.name}_scale"),
                helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], to=TensorProto.FLOAT,
                                 name=f"{node.name}_cast"),
                helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out], name=f"{node.name}_dequant")]):
            g.node.insert(at + k, new)
        tables.append(name)
    if tables:
        onnx.save(model, str(path))
    return {"embeddings": {"tables": tables, "min_elements": EMBED_MIN_ELEMENTS, "max_abs_error": worst,
                           "scheme": "weight-only int8, one symmetric scale per row; Gather + Cast + Mul"}}


def _dynamic(src: Path, dst: Path, batches: list[np.ndarray] | None, per_channel: bool,
             reduce_range: bool) -> dict[str, Any]:
    from .onnx import quantize_onnx

    settings = quantize_onnx(src, dst, reduce_range, per_channel)
    return {"method": "dynamic", **settings, **int8_embeddings(dst)}


def _static(src: Path, dst: Path, batches: list[np.ndarray] | None, per_channel: bool,
            reduce_range: bool) -> dict[str, Any]:
    from ..errors import MhsaError

    if not batches:
        raise MhsaError("static int8 needs validation rows to calibrate on, and this checkpoint has no data; "
                        "use --int8-methods dynamic")
    settings = quantize_static_qdq(src, dst, batches, per_channel)
    return {"method": "static", **settings, **int8_embeddings(dst)}


# method -> (src, dst, calibration batches or None, per_channel, reduce_range) -> settings
INT8_METHODS: dict[str, Callable[..., dict[str, Any]]] = {"dynamic": _dynamic, "static": _static}


def _correct(call: Any, split: Any) -> torch.Tensor:
    """(N,) bool: validation row i predicted right by ``call``."""
    from ..runtimes import predictions

    return predictions(call, split) == split.y


def _latency(calls: dict[str, Any], split: Any, threads: int, min_time: float) -> dict[str, dict[int, float]]:
    """p50 ms of each call at each of :data:`GATE_BATCHES`, timed round-robin (validation rows)."""
    from ..bench.timer import measure_interleaved

    out: dict[str, dict[int, float]] = {name: {} for name in calls}
    for b in GATE_BATCHES:
        x, _ = split.rows(torch.arange(min(b, len(split))))
        stats = measure_interleaved({n: (c, x) for n, c in calls.items()}, "cpu", min_time=min_time,
                                    min_repeats=10, warmup=2)
        for name, s in stats.items():
            out[name][b] = s.latency_ms_p50
    return out


def gate(calls: dict[str, Any], fp32_call: Any, split: Any, max_drop: float, threads: int,
         min_time: float = 0.2) -> dict[str, Any]:
    """Measure each int8 variant on ``split`` (validation) and pick the fastest within ``max_drop``.

    Args:
        calls: method -> an ORT call of that int8 graph (x -> logits).
        fp32_call: the fp32 graph's call (the accuracy reference).
        split: the validation split (never test).
        max_drop: the most accuracy points an int8 variant may lose against fp32.
        threads: ORT intra-op threads the calls use (recorded).
        min_time: seconds of timed calls per variant and batch size.

    Returns:
        ``{"max_drop_pts", "fp32_val_acc", "variants": {method: {val_acc, drop_pts, within, paired,
        latency_ms_p50: {batch: ms}, speed}}, "chosen": method or None, "why": text}``; ``paired``: the
        variant against fp32 on the same rows (:class:`mhsa_cli.metrics.PairedDelta`: rows gained / lost).
    """
    from ..metrics import paired_delta

    ref = _correct(fp32_call, split)
    lat = _latency(calls, split, threads, min_time)
    variants = {}
    for m, call in calls.items():
        right = _correct(call, split)
        paired = paired_delta(right, ref)  # the difference and its rows, on the same validation rows
        drop = 0.0 - paired.delta_pts  # 0.0 - x: no -0.0 when nothing changed
        variants[m] = {"val_acc": right.float().mean().item(), "drop_pts": drop,
                       "within": drop <= max_drop + 1e-9,  # float rounding
                       "paired": paired.to_dict(),
                       "latency_ms_p50": {str(b): v for b, v in lat[m].items()},
                       "speed": math.exp(sum(math.log(v) for v in lat[m].values()) / len(lat[m]))}
    ok = sorted((v["speed"], m) for m, v in variants.items() if v["within"])
    chosen = ok[0][1] if ok else None
    return {"max_drop_pts": max_drop, "fp32_val_acc": ref.float().mean().item(), "threads": threads,
            "variants": variants, "chosen": chosen, "why": _why(variants, chosen, max_drop)}


def _why(variants: dict[str, dict[str, Any]], chosen: str | None, max_drop: float) -> str:
    def desc(m: str) -> str:
        v = variants[m]
        ms = " / ".join(f"{x:.3g}" for x in v["latency_ms_p50"].values())
        rows = f" (rows +{v['paired']['gained']}/-{v['paired']['lost']})" if v.get("paired") else ""
        return f"{m}: {-v['drop_pts']:+.2f} pts{rows}, {ms} ms at batch {' / '.join(map(str, GATE_BATCHES))}"

    parts = "; ".join(desc(m) for m in variants)
    if chosen is None:
        return f"no int8 variant within {max_drop:g} points of fp32 on validation ({parts}): ship fp32"
    return f"{chosen}: the fastest within {max_drop:g} points of fp32 on validation ({parts})"
