"""Render ``mhsa predict`` results: a table of predictions and a summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from . import kv_table, pct, table

TEXT_WIDTH = 60  # characters of each text shown in the table


def _short(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= TEXT_WIDTH else one_line[: TEXT_WIDTH - 1] + "…"


def prediction_table(result: Any) -> Any:
    """Rows: line, text, predicted label, its probability, the top-3 classes (and the true label)."""
    truth = result.label_column is not None
    rows = []
    for p in result.shown:
        top = sorted(zip(result.labels, p.probs), key=lambda lp: -lp[1])[:3]
        rows.append([p.line, _short(p.text), p.label, f"{max(p.probs):.3f}",
                     ", ".join(f"{c} {v:.3f}" for c, v in top), *([p.true_label] if truth else [])])
    more = f" (first {len(result.shown)} of {result.rows:,})" if result.rows > len(result.shown) else ""
    return table(f"Predictions{more}", ["line", "text", "label", "prob.", "top classes",
                                        *(["true label"] if truth else [])], rows)


def render_predict(result: Any, console: Console) -> None:
    """Print the predictions table and a summary (a :class:`mhsa_cli.predict.PredictResult`)."""
    if result.shown:
        console.print(prediction_table(result))
    rows = [("model", f"{result.model} ({result.kind}, runtime {result.runtime})"),
            ("rows", f"{result.rows:,}"),
            ("labels", result.label_note)]
    if result.accuracy is not None:
        rows.append(("accuracy", f"{pct(result.accuracy)} ({result.correct:,} of {result.rows:,})"))
    rows.append(("time", f"{result.seconds:.2f}s ({result.rows_per_s:,.0f} rows/s, reading, "
                         "tokenizing and writing included)"))
    if result.out:
        rows.append(("written", result.out))
    rows += [("note", n) for n in result.notes]
    console.print(kv_table("Predict", rows))
