"""Render ``mhsa distill`` results: teacher vs student (vs scratch) side by side."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from . import kv_table, pct, plural, small_test_note, table
from .metrics import render_class_metrics


def comparison_rows(result: Any) -> list[list[Any]]:
    """One row per model: name, params, ratio to the teacher, val/test acc, relative test acc.

    Args:
        result: a :class:`mhsa_cli.distill.DistillResult`.

    Returns:
        Rows for :func:`mhsa_cli.report.table` (teacher, student, and scratch when run).
    """
    m, t = result.metrics, result.teacher
    rows = [["teacher", t["params"], "1.000", pct(t["val_acc"]), pct(t["test_acc"]), pct(1.0)],
            ["student (distilled)", m["params"], f"{m['param_ratio']:.3f}", pct(m["val_acc"]),
             pct(m["test_acc"]), pct(m["relative_test_acc"])]]
    if "scratch_test_acc" in m:
        rows.append(["student (scratch)", m["params"], f"{m['param_ratio']:.3f}", pct(m["scratch_val_acc"]),
                     pct(m["scratch_test_acc"]), pct(m["scratch_relative_test_acc"])])
    return rows


def _loss_text(losses: dict[str, float]) -> str:
    text = (f"{losses['ce']:.3g}·CE + {losses['kd']:.3g}·T²·KL (T = {losses['temperature']:g})")
    if losses["hidden_mse"]:
        text += f" + {losses['hidden_mse']:g}·hidden MSE"
    if losses["attention_kl"]:
        text += f" + {losses['attention_kl']:g}·attention KL"
    if losses.get("mixup"):
        text += f", on mixup inputs (a = {losses['mixup']:g}; labels mixed alike)"
    return text


def _pairs(pairs: list[list[int]]) -> str:
    return ", ".join(f"{s}:{t}" for s, t in pairs) or "–"


def render_distill(result: Any, console: Console) -> None:
    """Print the comparison table and the distillation settings.

    Args:
        result: a :class:`mhsa_cli.distill.DistillResult`.
        console: where to print.
    """
    cols = ["model", "params", "ratio", "val acc", "test acc", "rel. test acc"]
    console.print(table("Distillation", cols, comparison_rows(result)))
    m, p, s = result.metrics, result.plan, result.plan["student"]
    task = result.task
    rows = [
        ("task", f"{task['name']} ({task['train']}/{task['val']}/{task['test']} train/val/test)"),
        ("teacher", result.teacher["path"]),
        ("student", f"{plural(s['layers'], 'layer')}, d_model {s['d_model']}, heads {s['heads']}, "
                    f"head_dim {s['head_dim']}, d_ff {s['d_ff']}"),
        ("loss", _loss_text(result.losses)),
        ("hidden pairs (s:t)", _pairs(p["hidden_pairs"])),
        ("attention pairs (s:t)", _pairs(p["attention_pairs"])),
        ("init from teacher", "blocks " + ", ".join(map(str, p["init_layer_map"])) if p["init_layer_map"] else "no"),
        ("best epoch", m["best_epoch"]),
        ("training time", f"{m['train_seconds']:.1f}s"
         + (f" (scratch {m['scratch_train_seconds']:.1f}s)" if "scratch_train_seconds" in m else "")),
        ("checkpoint", str(result.out)),
    ]
    rows += [("note", n) for n in result.notes]
    console.print(kv_table("Result", rows))
    small = small_test_note(int(task["test"]), m.get("test_acc"))
    if small:
        console.print(small, highlight=False, markup=False, soft_wrap=not console.is_terminal)
    if "test_classes" in m:
        render_class_metrics(m["test_classes"], console, "test, distilled student")
