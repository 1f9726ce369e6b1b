"""``mhsa bench``'s files: bench.csv (long format, raw numbers), bench.png (accuracy vs latency),
bench.md and bench.json, written as one set (:func:`write_bench_files`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from . import csv_text
from .bench import bench_markdown

STAT_COLUMNS = ("latency_ms_p50", "latency_ms_p90", "latency_ms_mean", "latency_ms_min", "latency_ms_std",
                "repeats", "throughput_per_s")
CSV_COLUMNS = ["model", "path", "runtime", "precision", "kind", "baseline", "heads", "params", "size_bytes", "weight_bytes",
               "quantized_engine", "test_acc", "stored_test_acc", "compression", "acc_delta_pts", "device",
               "batch_size", "skipped", *STAT_COLUMNS, "speedup", "peak_mem_bytes", "parity_max_abs_gap",
               "test_macro_f1", "variant", "providers", "acc_delta_low_pts", "acc_delta_high_pts", "rows_gained",
               "rows_lost"]


def bench_csv(result: Any) -> str:
    """One line per model x device x batch size (long format), raw numbers."""
    lines = []
    for r in result.rows:
        for key in result.keys:
            st = r.latency.get(key)
            stats = [getattr(st, c) if st else "" for c in STAT_COLUMNS]
            lines.append([r.name, r.path, r.runtime, r.precision, r.kind, r.is_baseline, " ".join(map(str, r.heads)), r.params,
                          r.size_bytes, r.weight_bytes, _blank(r.quantized_engine), r.test_acc, _blank(r.stored_test_acc),
                          _blank(r.ratios.compression), r.ratios.acc_delta_pts, key[0], key[1],
                          r.skipped.get(key, ""), *stats, _blank(r.ratios.speedup.get(key)),
                          _blank(r.peak_mem_bytes.get(key)), _blank(r.parity_max_abs_gap),
                          _blank(r.test_macro_f1), r.variant, " ".join(r.providers.get(key[0], [])),
                          *_paired_cells(r.ratios.acc_delta)])
    return csv_text(CSV_COLUMNS, lines)


def _paired_cells(d: dict[str, Any] | None) -> list[Any]:
    """acc_delta_low_pts, acc_delta_high_pts, rows_gained, rows_lost (blank without a test split)."""
    return [d[k] for k in ("low_pts", "high_pts", "gained", "lost")] if d else [""] * 4


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


def bench_files(result: Any) -> dict[str, bytes]:
    """File name -> content of one bench's files: bench.json, .csv, .md (and .png with matplotlib)."""
    from . import have_matplotlib, json_text

    files = {"bench.json": (json_text(result.to_dict()) + "\n").encode(),
             "bench.csv": bench_csv(result).encode(), "bench.md": bench_markdown(result).encode()}
    if have_matplotlib():
        files["bench.png"] = bench_png(result)
    return files


def write_bench_files(result: Any, out: str | Path) -> list[Path]:
    """Write the bench files as one set: a new folder ``out`` replaces the old one in one rename.

    So ``out`` never mixes files of two runs (e.g. an old bench.png beside a new
    bench.md when matplotlib is missing now). The caller checks ``out`` first
    (:func:`mhsa_cli.checkpoint.check_output_dir`), so nothing is replaced without ``--force``.

    Returns:
        The paths written.
    """
    from ..checkpoint import atomic_dir

    files = bench_files(result)
    out = atomic_dir(Path(out), True, lambda tmp: [(tmp / n).write_bytes(b) for n, b in files.items()])
    return [out / n for n in files]
