"""Render ``mhsa train`` results."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from . import kv_table, pct, small_test_note, table


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
        ("parameters", m["params"]),
        ("training time", f"{m['train_seconds']:.1f}s"),
        ("checkpoint", str(result.out)),
    ]))
    small = small_test_note(int(result.task["test"]), m["test_acc"])
    if small:
        console.print(small, highlight=False, markup=False, soft_wrap=not console.is_terminal)
