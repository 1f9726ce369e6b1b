"""Render ``mhsa bench``: one rich table, and bench.json / .csv / .md / .png.

The table and the Markdown file share one column model (:func:`columns`):
rows are models, columns are grouped by metric (size, accuracy, then latency
per device x batch size); the best value of each column is highlighted
(bold green in the terminal, **bold** in Markdown); cells that do not apply
carry a footnote mark.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich import box
from rich.console import Console
from rich.table import Table

from . import csv_text, human_bytes, markdown_table, pct, write_atomic, write_json
from ..bench.command import CPU_ONLY
from ..bench.timer import WARMUP_FRACTION

BEST_STYLE = "bold green"
MARKS = "¹²³⁴⁵⁶⁷⁸⁹"
SKIP_REASONS = {CPU_ONLY: "int8 dynamic quantization runs on the CPU only: not timed on CUDA"}


@dataclass
class Column:
    """One table column: a header (group, label), a value getter and a formatter.

    ``better`` is "min", "max" or None (no highlighting). ``skip`` returns the
    reason a cell does not apply (footnoted), or None. ``level`` 0 columns are
    always shown in the terminal; levels 1 and 2 are dropped, 2 first, when the
    terminal is too narrow (the Markdown file always has every column).
    """

    group: str
    label: str
    value: Callable[[Any], Any]
    text: Callable[[Any], str]
    better: str | None = None
    skip: Callable[[Any], str | None] = lambda row: None
    level: int = 0


def _ms(v: float) -> str:
    """Three significant digits, trailing zeros kept (7.00, 12.0, 0.432); integers from 100."""
    return f"{v:#.3g}" if v < 99.95 else f"{v:.0f}"


def _times(v: float) -> str:
    return f"{v:.2f}×"


def _mib(v: float) -> str:
    return f"{v / 2**20:.2f}"


def _cell_columns(device: str, batch: int) -> list[Column]:
    """Latency, speedup, throughput (and CUDA peak memory) for one (device, batch) cell."""
    key, group = (device, batch), f"{device} b={batch}"

    def stat(name: str) -> Callable[[Any], Any]:
        return lambda r: getattr(r.latency[key], name) if key in r.latency else None

    skip = lambda r: r.skipped.get(key)  # noqa: E731
    cols = [
        Column(group, "p50 ms", stat("latency_ms_p50"), _ms, "min", skip),
        Column(group, "p90 ms", stat("latency_ms_p90"), _ms, "min", skip, level=2),
        Column(group, "speedup", lambda r: r.ratios.speedup.get(key), _times, "max", skip),
        Column(group, "per s", stat("throughput_per_s"), lambda v: f"{v:,.0f}", "max", skip, level=1),
    ]
    if device == "cuda":
        cols.append(Column(group, "peak MiB", lambda r: r.peak_mem_bytes.get(key), _mib, "min", skip, level=2))
    return cols


def columns(result: Any) -> list[Column]:
    """The table's columns for a :class:`mhsa_cli.bench.BenchResult`."""
    cols = [
        Column("", "model", lambda r: r.name + ("*" if r.is_baseline else ""), str),
        Column("", "kind", lambda r: r.kind, str, level=1),
        Column("", "heads", lambda r: ",".join(map(str, r.heads)), str, level=1),
        Column("size", "params", lambda r: r.params, lambda v: f"{v:,}", "min", level=1),
        Column("size", "disk", lambda r: r.size_bytes, human_bytes, "min"),
        Column("size", "memory", lambda r: r.weight_bytes, human_bytes, "min", level=2),
        Column("size", "ratio", lambda r: r.ratios.compression, _times, "max"),
        Column("test acc", "", lambda r: r.test_acc, pct, "max"),
        Column("test acc", "Δ pts", lambda r: r.ratios.acc_delta_pts, lambda v: f"{v:+.2f}", "max"),
    ]
    if imbalanced(result):  # accuracy alone hides a neglected small class
        cols.append(Column("test acc", "macro-F1", lambda r: r.test_macro_f1, lambda v: "–" if v is None else f"{v:.4f}", "max"))
    for device, batch in result.keys:
        cols.extend(_cell_columns(device, batch))
    return cols


def imbalanced(result: Any) -> bool:
    """True when the test split's classes are imbalanced (see :mod:`mhsa_cli.metrics`)."""
    return any((r.test_classes or {}).get("imbalanced") for r in result.rows)


def _best(col: Column, rows: list[Any]) -> Any:
    """The best value of a column, or None (no direction, or fewer than two values)."""
    values = [v for v in (col.value(r) for r in rows) if v is not None]
    if col.better is None or len(values) < 2:
        return None
    return min(values) if col.better == "min" else max(values)


def _is_best(value: Any, best: Any) -> bool:
    return best is not None and value is not None and abs(value - best) <= 1e-12 * max(1.0, abs(best))


def _cells(result: Any, cols: list[Column], marks: dict[str, str]) -> list[list[tuple[str, bool]]]:
    """(text, is_best) per row and column; inapplicable cells get 'n/a' + footnote mark."""
    bests = [_best(c, result.rows) for c in cols]
    table = []
    for row in result.rows:
        line = []
        for col, best in zip(cols, bests):
            reason, value = col.skip(row), col.value(row)
            if reason:
                line.append((f"n/a{marks.setdefault(reason, MARKS[len(marks) % len(MARKS)])}", False))
            elif value is None:
                line.append(("–", False))
            else:
                line.append((col.text(value), _is_best(value, best)))
        table.append(line)
    return table


# --------------------------------------------------------------------------- notes


def _device_note(result: Any) -> str | None:
    if "cuda" in result.devices:
        return None
    if result.environment.get("cuda"):
        return "CPU only: a CUDA GPU is present but was not asked for (--devices cpu,cuda)."
    return "CPU only: no CUDA GPU on this machine."


def footnotes(result: Any, marks: dict[str, str]) -> list[str]:
    """Lines under the table: inapplicable cells, method, memory, accuracy checks."""
    cfg, env = result.config, result.environment
    notes = [f"{m} {SKIP_REASONS.get(reason, reason)}" for reason, m in marks.items()]
    device_note = _device_note(result)
    if device_note:
        notes.append(device_note)
    notes.append(f"* baseline ({result.baseline}): ratio = baseline disk / model disk; speedup = "
                 "baseline p50 / model p50; Δ pts = model - baseline test accuracy.")
    n_warm = cfg.get("warmup")
    warm = (f"{n_warm} warm-up round{'s' * (n_warm != 1)} (at least {WARMUP_FRACTION:.0%} of the minimum time)"
            if n_warm else "no warm-up")
    notes.append(f"Latency: per-call p50/p90 after {warm}, at least "
                 f"{cfg.get('min_repeats')} calls and {cfg.get('min_time')} s per model, models timed "
                 f"round-robin; CPU threads: {env.get('torch_threads')}. Input: {result.timing_input}. "
                 "per s = samples per second at p50.")
    if "cuda" in result.devices:
        notes.append("peak MiB: torch.cuda.max_memory_allocated over one forward pass of the model "
                     "alone (weights + input + activations).")
    notes.append("Peak memory is not reported on CPU: torch has no CPU allocator peak, and the "
                 "process RSS high-water mark cannot be attributed to one model.")
    engines = {r.name: r.quantized_engine for r in result.rows if r.quantized_engine}
    if engines:
        notes.append("int8 weights packed for quantized engine: "
                     + ", ".join(f"{n} {e}" for n, e in engines.items()) + ".")
    for r in result.rows:
        if r.stored_test_acc is not None and abs(r.stored_test_acc - r.test_acc) > 1e-9:
            notes.append(f"{r.name}: test accuracy {pct(r.test_acc)} differs from the "
                         f"{pct(r.stored_test_acc)} stored in the checkpoint.")
    return notes


def environment_line(env: dict[str, Any]) -> str:
    """CPU, cores, threads, torch, quantized engine and GPU in one line."""
    gpu = env.get("gpu") or "no CUDA GPU"
    return (f"{env.get('cpu')} ({env.get('cpu_count')} cores, threads: {env.get('torch_threads')}) · "
            f"torch {env.get('torch')} · quantized engine {env.get('quantized_engine')} · {gpu}")


def _title(result: Any) -> str:
    t = result.task
    return f"Benchmark · task {t.get('name')} ({t.get('test')} test samples) · baseline {result.baseline}"


# --------------------------------------------------------------------------- outputs


def _rich_table(result: Any, cols: list[Column], marks: dict[str, str]) -> Table:
    t = Table(title=_title(result), title_justify="left", caption=environment_line(result.environment),
              caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    name_width = max(len(r.name) + 1 for r in result.rows)
    for i, c in enumerate(cols):
        first_of_group = i == 0 or cols[i - 1].group != c.group
        t.add_column(f"{c.group if first_of_group else ''}\n{c.label}", no_wrap=True,
                     justify="left" if not c.better and c.group == "" else "right",
                     min_width=name_width if i == 0 else None)
    for line in _cells(result, cols, marks):
        t.add_row(*[f"[{BEST_STYLE}]{text}[/]" if best else text for text, best in line])
    return t


def bench_table(result: Any, width: int | None = None) -> tuple[Table, list[str]]:
    """The rich table and its footnotes.

    Args:
        result: a :class:`mhsa_cli.bench.BenchResult`.
        width: terminal width; columns of level 2, then 1, are left out until the
            table fits (a footnote names them). None: every column.
    """
    from rich.console import Console
    from rich.measure import Measurement

    every = columns(result)
    probe = Console(width=10_000)
    for level in (2, 1, 0):
        cols = [c for c in every if c.level <= level]
        marks: dict[str, str] = {}
        t = _rich_table(result, cols, marks)
        if width is None or Measurement.get(probe, probe.options, t).maximum <= width:
            break
    notes = footnotes(result, marks)
    hidden = list(dict.fromkeys(c.label for c in every if c not in cols))
    if hidden:
        notes.append(f"Left out to fit {width} columns: {', '.join(hidden)} (bench.md and bench.csv "
                     "in --out have every column).")
    return t, notes


def render_bench(result: Any, console: Console) -> None:
    """Print the table, its footnotes and the files written."""
    t, notes = bench_table(result, console.width)
    console.print(t)
    for note in notes:
        console.print(note, highlight=False, markup=False)
    if result.files:
        console.print("wrote: " + ", ".join(result.files), highlight=False, markup=False)


def bench_markdown(result: Any) -> str:
    """The table as Markdown (best values in bold), its footnotes and the environment."""
    marks: dict[str, str] = {}
    cols = columns(result)
    cells = _cells(result, cols, marks)
    headers = [f"{c.group} {c.label}".strip() for c in cols]
    headers[0] = "model (* baseline)"
    rows = [[f"**{text}**" if best else text for text, best in line] for line in cells]
    notes = "\n".join(f"- {n}" for n in footnotes(result, marks))
    return (f"# {_title(result)}\n\n{markdown_table(headers, rows)}\n{notes}\n\n"
            f"Environment: {environment_line(result.environment)}\n")


STAT_COLUMNS = ("latency_ms_p50", "latency_ms_p90", "latency_ms_mean", "latency_ms_min", "latency_ms_std",
                "repeats", "throughput_per_s")
CSV_COLUMNS = ["model", "path", "kind", "baseline", "heads", "params", "size_bytes", "weight_bytes",
               "quantized_engine", "test_acc", "stored_test_acc", "compression", "acc_delta_pts", "device",
               "batch_size", "skipped", *STAT_COLUMNS, "speedup", "peak_mem_bytes"]


def bench_csv(result: Any) -> str:
    """One line per model x device x batch size (long format), raw numbers."""
    lines = []
    for r in result.rows:
        for key in result.keys:
            st = r.latency.get(key)
            stats = [getattr(st, c) if st else "" for c in STAT_COLUMNS]
            lines.append([r.name, r.path, r.kind, r.is_baseline, " ".join(map(str, r.heads)), r.params,
                          r.size_bytes, r.weight_bytes, _blank(r.quantized_engine), r.test_acc, _blank(r.stored_test_acc),
                          _blank(r.ratios.compression), r.ratios.acc_delta_pts, key[0], key[1],
                          r.skipped.get(key, ""), *stats, _blank(r.ratios.speedup.get(key)),
                          _blank(r.peak_mem_bytes.get(key)), _blank(r.test_macro_f1)])
    return csv_text(CSV_COLUMNS, lines)


def _blank(v: Any) -> Any:
    return "" if v is None else v


def bench_png(result: Any) -> bytes:
    """Accuracy vs p50 latency, one panel per (device, batch); marker area ~ MiB on disk."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = result.keys
    fig = Figure(figsize=(4.2 * len(keys), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    top_mb = max(r.size_bytes for r in result.rows) / 2**20 or 1.0
    for ax, key in zip(axes, keys):
        for r in result.rows:
            if key not in r.latency:
                continue
            mb, area = r.size_bytes / 2**20, 40 + 600 * r.size_bytes / 2**20 / top_mb
            point = (r.latency[key].latency_ms_p50, 100 * r.test_acc)
            ax.scatter(*point, s=area, alpha=0.6)
            ax.annotate(f"{r.name} ({mb:.2f} MiB)", point, xytext=(0, area**0.5 / 2 + 2),
                        textcoords="offset points", fontsize=7, ha="center", va="bottom")
        ax.margins(0.2)
        ax.set(title=f"{key[0]}, batch {key[1]} (marker area ~ MiB on disk)", xlabel="p50 latency (ms)",
               ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def write_bench_files(result: Any, out: str | Path) -> list[Path]:
    """Write bench.json, bench.csv, bench.md (and bench.png with matplotlib) atomically.

    The caller checks ``out`` first (:func:`mhsa_cli.checkpoint.check_output_dir`),
    so nothing is overwritten without ``--force``.

    Returns:
        The paths written.
    """
    from . import have_matplotlib

    out = Path(out)
    files = [write_json(out / "bench.json", result.to_dict()),
             write_atomic(out / "bench.csv", bench_csv(result)),
             write_atomic(out / "bench.md", bench_markdown(result))]
    if have_matplotlib():
        files.append(write_atomic(out / "bench.png", bench_png(result)))
    return files
