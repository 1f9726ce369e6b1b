"""Render ``mhsa quantize`` results."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.console import Console

from . import human_bytes, kv_table, pct, points, table


def _short(names: list[str], limit: int = 6) -> str:
    """``a, b, c, ... (+n more)``."""
    shown = ", ".join(names[:limit])
    return shown + (f", … (+{len(names) - limit} more)" if len(names) > limit else "")


def _module_groups(result: Any) -> list[tuple[str, str, int, str]]:
    """Rows (status, type, count, names): quantized Linear layers, then float parts by type."""
    rows = [("int8", "Linear", len(result.quantized_modules), _short(result.quantized_modules))]
    if result.quantized_embeddings:
        rows.append(("int8", "Embedding (weight-only, per row)", len(result.quantized_embeddings),
                     _short(result.quantized_embeddings)))
    by_type: dict[str, list[str]] = defaultdict(list)
    params: dict[str, int] = defaultdict(int)
    for part in result.float_modules:
        by_type[part["type"]].append(part["name"])
        params[part["type"]] += part["params"]
    rows += [("float", f"{t} ({params[t]:,} params)", len(n), _short(n)) for t, n in by_type.items()]
    return rows


def render_quantize(result: Any, console: Console) -> None:
    """Settings, module coverage, sizes and accuracy of a :class:`~mhsa_cli.quantize.QuantizeResult`."""
    engine = result.engine + (" (auto)" if result.engine_requested == "auto" else "")
    console.print(kv_table("Quantization", [
        ("source", result.source),
        ("backend", result.backend),
        ("engine", engine),
        ("weight scales", "per channel" if result.per_channel else "per tensor"),
        ("int8 parameters", f"{pct(result.int8_fraction)}  ({result.params_int8:,} int8, "
                            f"{result.params_float:,} float)"),
        ("checkpoint", result.out),
    ]))
    console.print(table("Modules", ["stored as", "type", "count", "names"], _module_groups(result)))
    console.print(table("Size", ["", "float", "int8", "int8 / float"], [
        ("on disk", human_bytes(result.size_bytes_float), human_bytes(result.size_bytes_int8),
         f"{result.size_ratio:.3f}"),
        ("in memory (weights)", human_bytes(result.weight_bytes_float), human_bytes(result.weight_bytes_int8),
         f"{result.weight_bytes_int8 / max(result.weight_bytes_float, 1):.3f}"),
    ]))
    if result.accuracy:
        console.print(table("Accuracy", ["split", "float", "int8", "change"], [
            (split, pct(acc["float"]), pct(acc["int8"]), points(acc["int8"] - acc["float"]))
            for split, acc in result.accuracy.items()
        ]))
    if result.latency:
        console.print(table(f"CPU latency, quick check ({result.threads} threads)",
                            ["batch", "float p50 ms", "int8 p50 ms", "int8 / float"],
                            [(str(b), f"{v['float_ms']:.3f}", f"{v['int8_ms']:.3f}", f"{v['ratio']:.2f}")
                             for b, v in result.latency.items()]))
        slower = [str(b) for b, v in result.latency.items() if v["ratio"] > 1.0]
        if slower:
            console.print(f"note: int8 is slower than float here at batch {', '.join(slower)}, as is usual for "
                          "small matrices: quantizing each activation costs more than the int8 products save. "
                          "int8 still cuts the size. Full measurement: mhsa bench.")
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
