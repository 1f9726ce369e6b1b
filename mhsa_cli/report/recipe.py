"""Render ``mhsa run``: the plan (dry run) or the stages run, then the final bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from . import table

STATUS = {"run": "[yellow]will run[/]", "skip": "[green]up to date[/]"}


def render_recipe(result: Any, console: Console) -> None:
    """Stage table (status, time, output) and the final comparison table."""
    plan = result.plan
    rows = []
    for s in plan.stages:
        status = STATUS[s.status] if result.dry_run else ("ran" if s.status == "run" else "skipped (up to date)")
        if s.status == "run" and s.reason:
            status += f": {escape(s.reason)}"
        rows.append((s.name, s.type, ", ".join(s.inputs) or "–", status,
                     f"{s.seconds:.1f}s" if s.seconds else "–", f"{s.name}/"))
    title = (f"Recipe '{plan.name}' ({plan.source}) → {plan.out}/"
             + (" — dry run, nothing ran" if result.dry_run else ""))
    console.print(table(title, ["stage", "type", "from", "status", "time", "output"], rows))
    if result.dry_run:
        return
    last = plan.stages[-1]
    if last.type != "bench" and last.result is not None:  # e.g. a recipe ending in a sweep
        from ..stages import RENDER, resolve

        resolve(RENDER[last.type])(last.result, console)
    if result.bench is not None:  # a skipped bench stage's result is its bench.json, read back
        from ..bench.result import BenchResult
        from .bench import render_bench

        bench = BenchResult.from_dict(result.bench) if isinstance(result.bench, dict) else result.bench
        render_bench(bench, console)
    console.print(f"results in {plan.out}/ ({result.seconds:.1f}s): "
                  + ", ".join(Path(f).name for f in result.files) if result.files else f"results in {plan.out}/")
