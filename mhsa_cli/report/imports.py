"""Render ``mhsa import`` results."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from . import kv_table, pct


def render_imports(result: Any, console: Console) -> None:
    """Architecture, shape, labels and notes of a :class:`mhsa_cli.imports.ImportResult`."""
    m, metrics = result.model, result.metrics
    rows = [
        ("architecture", result.architecture),
        ("layers / heads", f"{len(m['heads'])} / {', '.join(map(str, m['heads']))}"),
        ("d_model / d_ff", f"{m['d_model']} / {m['d_ff']}"),
        ("blocks", f"{m['norm']}-LN, {m['activation']}, eps {m['ln_eps']:g}, pooler {m['pooler']}"),
        ("positions / pad id", f"{m['max_len']} (offset {m['pos_offset']}) / {m['pad_id']}"),
        ("labels", ", ".join(result.labels)),
        ("parameters", metrics["params"]),
        ("fresh (seeded)", ", ".join(result.fresh) or "none"),
        ("unused HF tensors", len(result.ignored)),
    ]
    rows += [(name, pct(metrics[key])) for key, name in (("val_acc", "validation accuracy"),
                                                         ("test_acc", "test accuracy")) if key in metrics]
    if "hf_max_gap" in metrics:
        rows.append(("vs transformers", f"max |gap| {metrics['hf_max_gap']:.2g} ({metrics['hf_check']})"))
    else:
        rows.append(("vs transformers", metrics.get("hf_check", "not run")))
    rows.append(("checkpoint", str(result.out)))
    console.print(kv_table("Imported", rows))
    for note in result.notes:
        console.print(f"note: {note}")
