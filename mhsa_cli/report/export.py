"""Render ``mhsa export``: files, parity, accuracy per runtime and the int8 graph's ops."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from . import human_bytes, kv_table, pct


def _ops(counts: dict[str, int], names: tuple[str, ...]) -> str:
    return ", ".join(f"{n} {counts[n]}" for n in names if counts.get(n)) or "none"


INT8_SHOWN = ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
              "QuantizeLinear", "DequantizeLinear", "QLinearMatMul")
FUSED_SHOWN = ("FusedMatMul", "BiasGelu", "FastGelu", "SkipLayerNormalization", "Attention",
               "MultiHeadAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def render_export(result: Any, console: Console) -> None:
    """Print what was written and what the export measured."""
    acc = result.accuracy
    rows = [("source", result.source), ("out", result.out)]
    ex = result.meta.get("exporter") or {}
    if ex:
        kind = "torch.export + onnxscript" if ex["exporter"] == "dynamo" else "deprecated by torch; the fallback"
        rows.append(("exporter", f"{ex['exporter']} ({kind}), opset {ex['opset']}"))
    for p, f in result.files.items():
        rows.append((f"{p} file", f"{f['file']} ({human_bytes(f['bytes'])}, {sum(f['ops'].values())} nodes; "
                                 f"ORT runs {sum(f['optimized_ops'].values())})"))
    gap = result.parity
    rows_from = "validation rows" if gap.get("split", "val") == "val" else "rows built from the checkpoint"
    rows.append(("parity torch vs ORT fp32", f"max |logit gap| {gap['max_abs_gap']:.2e} on {gap['rows']} {rows_from} "
                                             f"(full, half length, one row; tolerance {gap['tolerance']:g}"
                                             f" + {gap.get('rtol', 0.0):g} x |logit|)"))
    if acc:
        rows.append(("test acc torch", pct(acc["checkpoint"])))
        for p in result.files:
            ort = acc[f"ort_{p}"]
            rows.append((f"test acc ORT {p}", f"{pct(ort)} ({100 * (ort - acc['checkpoint']):+.2f} pts)"))
    else:
        rows.append(("test acc", "not measured (no data)"))
    if "int8" in result.files:
        rows.append(("int8 graph ops", _ops(result.files["int8"]["ops"], INT8_SHOWN)))
        rows.append(("int8 ops ORT runs", _ops(result.files["int8"]["optimized_ops"], INT8_SHOWN)))
    gate = result.meta.get("int8_gate")
    for m, v in (gate or {}).get("variants", {}).items():
        ms = " / ".join(f"{x:.3g}" for x in v["latency_ms_p50"].values())
        mark = "kept" if m == gate["chosen"] else ("dropped: slower" if v["within"] else "dropped: over --max-drop")
        rows.append((f"int8 gate: {m}", f"val {pct(v['val_acc'])} ({-v['drop_pts']:+.2f} pts vs fp32), "
                                        f"p50 {ms} ms at batch {' / '.join(v['latency_ms_p50'])}: {mark}"))
    rows.append(("fp32 fusions ORT runs", _ops(result.files["fp32"]["optimized_ops"], FUSED_SHOWN)))
    rows.append(("threads", str(result.threads)))
    console.print(kv_table("mhsa export", rows))
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    console.print(f"wrote: {result.out} (model files + export.json)", highlight=False, markup=False)
