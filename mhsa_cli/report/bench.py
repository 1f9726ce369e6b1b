"""Render ``mhsa bench``: one rich table and bench.md (the files: :mod:`.bench_files`).

The table and the Markdown file share one column model (:func:`columns`):
rows are models, columns are grouped by metric (size, accuracy, then latency
per device x batch size); the best value of each column is highlighted
(bold green in the terminal, **bold** in Markdown); cells that do not apply
carry a footnote mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rich import box
from rich.console import Console
from rich.table import Table

from . import human_bytes, markdown_table, pct, small_test_note
from ..bench.result import COPIES, CPU_ONLY
from ..bench.timer import BURST_MS, WARMUP_FRACTION

BEST_STYLE = "bold green"
MARKS = "¹²³⁴⁵⁶⁷⁸⁹"
SKIP_REASONS = {CPU_ONLY: "int8 dynamic quantization runs on the CPU only: not timed on CUDA"}


@dataclass
class Column:
    """One table column: a header (group, label), a value getter and a formatter.

    ``better`` is "min", "max" or None (no highlighting). ``skip`` returns the
    reason a cell does not apply (footnoted), or None. ``level`` is a priority:
    a terminal too narrow for the whole table gets it split into several tables
    (whole groups each, the model column repeated; :func:`bench_tables`); only a
    group too wide on its own drops columns, level 2 first, then 1 (the Markdown
    file and piped output always have every column).
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
        *([Column("", "runtime", lambda r: r.runtime_label, str)] if _several_runtimes(result) else []),
        Column("", "kind", lambda r: r.kind, str, level=1),
        Column("", "heads", lambda r: ",".join(map(str, r.heads)), str, level=1),
        Column("size", "params", lambda r: r.params, lambda v: f"{v:,}", "min", level=1),
        Column("size", "disk", lambda r: r.size_bytes, human_bytes, "min"),
        Column("size", "memory", lambda r: r.weight_bytes, human_bytes, "min", level=2),
        Column("size", "ratio", lambda r: r.ratios.compression, _times, "max"),
        Column("test acc", "", lambda r: r.test_acc, pct, "max"),
        Column("test acc", "Δ pts", lambda r: r.ratios.acc_delta_pts, lambda v: f"{v:+.2f}", "max"),
        Column("test acc", "95 % CI", _paired, lambda v: f"{v['low_pts']:+.1f} to {v['high_pts']:+.1f}", level=1),
        Column("test acc", "rows +/−", _paired, lambda v: f"+{v['gained']}/−{v['lost']}", level=2),
    ]
    if imbalanced(result):  # accuracy alone hides a neglected small class
        cols.append(Column("test acc", "macro-F1", lambda r: r.test_macro_f1, lambda v: "–" if v is None else f"{v:.4f}", "max"))
    for device, batch in result.keys:
        cols.extend(_cell_columns(device, batch))
    return cols


def _paired(row: Any) -> dict[str, Any] | None:
    """The paired comparison with the baseline (none on the baseline's own row)."""
    return None if row.is_baseline else row.ratios.acc_delta


def _several_runtimes(result: Any) -> bool:
    return any(r.runtime != "torch" for r in result.rows)


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
                 "baseline p50 / model p50; Δ pts = model - baseline test accuracy; 95 % CI = its paired interval "
                 "on the same test rows (Wald, from the rows only the model gets right, +, and only the baseline, −): "
                 "an interval holding 0 means the test split cannot tell the two apart.")
    n_warm = cfg.get("warmup")
    warm = (f"{n_warm} warm-up round{'s' * (n_warm != 1)} (at least {WARMUP_FRACTION:.0%} of the minimum time)"
            if n_warm else "no warm-up")
    burst = cfg.get("burst_ms", BURST_MS)
    order = (f"round-robin in bursts of about {burst:g} ms per model (warm caches: each burst "
             "starts with an untimed call)" if n_warm and burst else "round-robin, one call per model per round")
    notes.append(f"Latency: per-call p50/p90 after {warm}, at least "
                 f"{cfg.get('min_repeats')} calls and {cfg.get('min_time')} s per model, models timed "
                 f"{order}; CPU threads: {env.get('torch_threads')}. Input: {result.timing_input}. "
                 "per s = samples per second at p50." + (f" On cuda: {COPIES}." if "cuda" in result.devices else ""))
    if "cuda" in result.devices:
        notes.append("peak MiB: torch.cuda.max_memory_allocated over one forward pass of the model "
                     "alone (weights + input + activations).")
    notes.append("Peak memory is not reported on CPU: torch has no CPU allocator peak, and the "
                 "process RSS high-water mark cannot be attributed to one model.")
    notes.extend(_runtime_notes(result))
    engines = {r.name: r.quantized_engine for r in result.rows if r.quantized_engine}
    if engines:
        notes.append("int8 weights packed for quantized engine: "
                     + ", ".join(f"{n} {e}" for n, e in engines.items()) + ".")
    base = next((r for r in result.rows if r.is_baseline), result.rows[0])
    small = small_test_note(int(result.task.get("test") or 0), base.test_acc)
    if small:
        notes.append(small.replace("warning: ", "Warning: ", 1))
    for r in result.rows:
        if r.stored_test_acc is not None and abs(r.stored_test_acc - r.test_acc) > 1e-9:
            notes.append(f"{r.name}: test accuracy {pct(r.test_acc)} differs from the "
                         f"{pct(r.stored_test_acc)} stored in the checkpoint.")
    return notes


def _providers(result: Any) -> str:
    """The execution providers ORT sessions took, per device (as the rows recorded them)."""
    taken = {d: sorted({p[0] for r in result.rows if (p := getattr(r, "providers", {}).get(d))})
             for d in result.devices}
    text = "; ".join(f"{d}: {', '.join(names)}" for d, names in taken.items() if names)
    return f"providers taken ({text})" if text else "CPU provider"


def _static(result: Any) -> str:
    """How the int8-static rows were made, when there are any."""
    if not any(r.precision == "int8-static" for r in result.rows):
        return ""
    return ", int8-static = static QDQ int8 (quantize_static, calibrated on validation rows)"


def _scales(result: Any) -> str:
    return ("one weight scale per output channel (--per-channel)" if result.config.get("per_channel")
            else "one weight scale per tensor")


def _runtime_notes(result: Any) -> list[str]:
    """Left-out runtimes, ORT settings and parity, and the fastest runtime per model and cell."""
    notes = list(getattr(result, "notes", []))
    if not _several_runtimes(result):
        return notes
    ort = result.environment.get("ort_threads") or {}
    intra = ort.get("intra_op")
    threads = (f"{', '.join(map(str, intra))} intra-op threads (a row each; torch: "
               f"{result.environment.get('torch_threads')})" if isinstance(intra, list)
               else f"{intra} intra-op thread(s) (= torch's)")
    notes.append(f"ORT: onnxruntime {result.environment.get('onnxruntime')}, {_providers(result)}, all graph "
                 "optimisations, "
                 f"{threads}, spinning off; fp32 = the exported graph, "
                 f"int8 = ORT dynamic quantization (quantize_dynamic after quant_pre_process){_static(result)}, "
                 f"{_scales(result)}; accuracy measured in each runtime.")
    gaps = [(r.name, r.parity_max_abs_gap) for r in result.rows if r.parity_max_abs_gap is not None
            and r.precision == "fp32"]
    if gaps:
        notes.append("ORT fp32 vs torch, max |logit gap| on validation rows: "
                     + ", ".join(f"{n} {g:.1e}" for n, g in gaps) + ".")
    by_model: dict[str, list[str]] = {}
    for f in getattr(result, "fastest", []):
        by_model.setdefault(f["model"], []).append(
            f"{f['device']} b={f['batch_size']} {_label(f)} ({_ms(f['latency_ms_p50'])} ms)")
    if by_model:
        notes.append("Fastest runtime per model (p50): " + "; ".join(
            f"{m}: {', '.join(cells)}" for m, cells in by_model.items()) + ".")
    return notes


def _label(f: dict[str, Any]) -> str:
    return f.get("label") or f"{'ORT' if f['runtime'] == 'onnxruntime' else f['runtime']} {f['precision']}"


def environment_line(env: dict[str, Any]) -> str:
    """CPU, cores, threads, torch, quantized engine and GPU in one line."""
    gpu = env.get("gpu") or "no CUDA GPU"
    return (f"{env.get('cpu')} ({env.get('cpu_count')} cores, threads: {env.get('torch_threads')}) · "
            f"torch {env.get('torch')} · quantized engine {env.get('quantized_engine')} · {gpu}")


def _title(result: Any) -> str:
    t = result.task
    return f"Benchmark · task {t.get('name')} ({t.get('test')} test samples) · baseline {result.baseline}"


# --------------------------------------------------------------------------- outputs


def _rich_table(result: Any, cols: list[Column], marks: dict[str, str], title: str | None = None,
                caption: str | None = None, fold: bool = False) -> Table:
    """One rich table of ``cols``; cells never wrap (``fold``: they may, as a last resort, never cut)."""
    t = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    name_width = max(len(r.name) + 1 for r in result.rows)
    for i, c in enumerate(cols):
        first_of_group = i == 0 or cols[i - 1].group != c.group
        t.add_column(f"{c.group if first_of_group else ''}\n{c.label}", no_wrap=not fold,
                     overflow="fold" if fold else "ellipsis",
                     justify="left" if not c.better and c.group == "" else "right",
                     min_width=name_width if i == 0 else None)
    for line in _cells(result, cols, marks):
        t.add_row(*[f"[{BEST_STYLE}]{text}[/]" if best else text for text, best in line])
    return t


def _width(result: Any, cols: list[Column]) -> int:
    """Columns a table of ``cols`` needs to show every cell whole."""
    from rich.console import Console
    from rich.measure import Measurement

    probe = Console(width=10_000)
    return Measurement.get(probe, probe.options, _rich_table(result, cols, {})).maximum


def layout(result: Any, width: int | None, every: list[Column] | None = None) -> list[list[Column]]:
    """The column sets of the tables that show ``result`` in ``width`` terminal columns
    (:func:`mhsa_cli.report.layout.split_columns`: whole table, or whole groups packed
    into several tables, each led by the model column)."""
    from .layout import split_columns

    every = every if every is not None else columns(result)
    return split_columns(every, width, lambda cols: _width(result, cols), group=lambda c: c.group,
                         level=lambda c: c.level)


def bench_tables(result: Any, width: int | None = None) -> tuple[list[Table], list[str]]:
    """The rich tables (one, or several at a narrow width) and their footnotes.

    Args:
        result: a :class:`mhsa_cli.bench.BenchResult`.
        width: terminal width; None (piped output, files): one table with every column.

    Returns:
        Tables whose cells are never cut (no number ends in "…"), and the notes;
        a note names any column left out.
    """
    every = columns(result)
    sets = layout(result, width, every)
    marks: dict[str, str] = {}
    tables = []
    for i, cols in enumerate(sets):
        fold = width is not None and _width(result, cols) > width  # narrower than one group: wrap, never cut
        tables.append(_rich_table(result, cols, marks, _title(result) if i == 0 else None,
                                  environment_line(result.environment) if i == len(sets) - 1 else None, fold))
    notes = footnotes(result, marks)
    shown = {id(c) for cols in sets for c in cols}
    hidden = [f"{c.group} {c.label}".strip() for c in every if id(c) not in shown]
    if hidden:
        notes.append(f"Left out to fit {width} columns: {', '.join(hidden)} (bench.md and bench.csv "
                     "in --out, and piped output, have every column).")
    return tables, notes


def bench_table(result: Any, width: int | None = None) -> tuple[Table, list[str]]:
    """The first of :func:`bench_tables` (the whole table when ``width`` is None or it fits)."""
    tables, notes = bench_tables(result, width)
    return tables[0], notes


def render_bench(result: Any, console: Console) -> None:
    """Print the table(s), footnotes and files written.

    In a terminal the table is laid out for its width (split, never cut);
    piped or redirected output gets the whole table and unwrapped lines.
    """
    piped = not console.is_terminal
    tables, notes = bench_tables(result, None if piped else console.width)
    if piped:  # the whole table, however wide: a file or a pager has no width to fit
        width = console.width
        console.width = max(width, _width(result, columns(result)))
        try:
            console.print(tables[0])
        finally:
            console.width = width
    else:
        for t in tables:
            console.print(t)
    for note in notes:
        console.print(note, highlight=False, markup=False, soft_wrap=piped)
    if result.files:
        console.print("wrote: " + ", ".join(result.files), highlight=False, markup=False, soft_wrap=piped)


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
