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


def _dynamic(src: Path, dst: Path, batches: list[np.ndarray] | None, per_channel: bool,
             reduce_range: bool) -> dict[str, Any]:
    from .onnx import quantize_onnx

    return {"method": "dynamic", **quantize_onnx(src, dst, reduce_range, per_channel)}


def _static(src: Path, dst: Path, batches: list[np.ndarray] | None, per_channel: bool,
            reduce_range: bool) -> dict[str, Any]:
    from ..errors import MhsaError

    if not batches:
        raise MhsaError("static int8 needs validation rows to calibrate on, and this checkpoint has no data; "
                        "use --int8-methods dynamic")
    return {"method": "static", **quantize_static_qdq(src, dst, batches, per_channel)}


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
    return {"max_drop_pts": max_drop, "fp32_val_acc": ref.float().mean().item(), "threads": threads, "variants": variants,
            "chosen": chosen, "why": _why(variants, chosen, max_drop)}


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
