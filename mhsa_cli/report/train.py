"""Render ``mhsa train`` results."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from . import kv_table, pct, small_test_note, table
from .metrics import render_class_metrics


def render_train(result: Any, console: Console) -> None:
    """Per-epoch table + final metrics of a :class:`mhsa_cli.train.TrainResult`."""
    rows = [(int(h["epoch"]), f"{h['train_loss']:.4f}", pct(h["train_acc"]), pct(h["val_acc"]), f"{h['seconds']:.1f}s")
            for h in result.history]
    console.print(table("Training", ["epoch", "train loss", "train acc", "val acc", "time"], rows))
    m = result.metrics
    console.print(kv_table("Result", [
        ("task", f"{result.task['name']} ({result.task['train']}/{result.task['val']}/{result.task['test']} train/val/test)"),
        ("best epoch", m["best_epoch"]),
        ("validation accuracy", pct(m["val_acc"])),
        ("test accuracy", pct(m["test_acc"])),
        *([("test macro-F1", f"{m['test_macro_f1']:.4f}")] if "test_macro_f1" in m else []),
        *([("input length", f"{result.task['max_len']} tokens" + (
            " (auto: 99th percentile of the training split's token counts)"
            if result.task.get("max_len_auto") else ""))] if "max_len" in result.task else []),
        ("parameters", m["params"]),
        ("training time", f"{m['train_seconds']:.1f}s"),
        ("checkpoint", str(result.out)),
    ]))
    small = small_test_note(int(result.task["test"]), m["test_acc"])
    if small:
        console.print(small, highlight=False, markup=False, soft_wrap=not console.is_terminal)
    if "test_classes" in m:
        render_class_metrics(m["test_classes"], console)
