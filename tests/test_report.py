"""report/ (mhsa_cli/report/): tables at ordinary terminal widths never cut a value; piped output is whole."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mhsa_cli.bench.result import BenchResult, BenchRow, Ratios
from mhsa_cli.bench.timer import summarize
from mhsa_cli.report import bench as report_bench
from mhsa_cli.report.bench import Column, _cells, bench_tables, columns, render_bench


def quickstart_like() -> BenchResult:
    """The quickstart table's shape and numbers (5 models, cpu x batch 1 and 32)."""
    keys = [("cpu", 1), ("cpu", 32)]
    spec = [("baseline", "float", [8, 8], 1067014, 4.1 * 2**20, 0.9960, (0.981, 11.1)),
            ("pruned", "pruned", [4, 4], 804102, 3.1 * 2**20, 0.9980, (0.806, 8.37)),
            ("baseline-int8", "int8", [8, 8], 1067014, 1.1 * 2**20, 0.9965, (0.785, 5.53)),
            ("pruned-int8", "int8", [4, 4], 804102, 838.0 * 1024, 0.9985, (0.717, 4.15)),
            ("student", "student", [4], 138886, 544.4 * 1024, 0.9985, (0.328, 2.00))]
    rows = []
    for name, kind, heads, params, size, acc, p50s in spec:
        r = BenchRow(name, f"runs/{name}", kind, heads, params, int(size), int(size), acc, acc,
                     quantized_engine="x86" if kind == "int8" else None)
        for k, p in zip(keys, p50s):
            r.latency[k] = summarize([p, p * 1.01, p * 1.07], k[1])
        rows.append(r)
    base = rows[0]
    base.is_baseline = True
    for r in rows:
        r.ratios = Ratios(base.size_bytes / r.size_bytes, 100 * (r.test_acc - base.test_acc),
                          {k: base.latency[k].latency_ms_p50 / r.latency[k].latency_ms_p50 for k in keys})
    env = {"cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 2, "torch": "2.13.0+cpu",
           "quantized_engine": "x86", "cuda": False}
    return BenchResult(rows, "baseline", ["cpu"], [1, 32], env, {"warmup": 5, "min_repeats": 20, "min_time": 1.0},
                       {"name": "order", "test": 2000}, "24-token rows of the validation split (seed 0)")


def every_cell(result) -> list[str]:
    return [text for line in _cells(result, columns(result), {}) for text, _ in line]


def rendered(result, width: int, terminal: bool = True) -> str:
    console = Console(width=width, record=True, force_terminal=terminal, color_system=None,
                      file=io.StringIO())
    render_bench(result, console)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120])
def test_bench_table_at_ordinary_widths_cuts_no_number(width):
    result = quickstart_like()
    text = rendered(result, width)
    assert "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    for cell in every_cell(result):  # every value of every column, whole (split tables, nothing dropped)
        assert cell in text, cell
    assert "Left out" not in text


def test_narrow_terminal_splits_by_groups_and_wide_one_keeps_one_table():
    result = quickstart_like()
    tables80, _ = bench_tables(result, 80)
    tables120, _ = bench_tables(result, 120)
    whole, _ = bench_tables(result, None)
    assert len(whole) == 1 and len(whole[0].columns) == len(columns(result))
    assert len(tables120) == 2 and len(tables80) >= 3
    for tables in (tables80, tables120):
        assert all(t.columns[0].header.endswith("model") for t in tables)  # model name repeated
        # every column shown exactly once besides the repeated model column
        assert sum(len(t.columns) - 1 for t in tables) == len(columns(result)) - 1
    assert len(bench_tables(result, 400)[0]) == 1


def test_piped_output_gets_the_whole_table_on_unwrapped_lines():
    result = quickstart_like()
    text = rendered(result, 80, terminal=False)
    assert "…" not in text
    header = next(line for line in text.splitlines() if "p50 ms" in line)
    assert header.count("p50 ms") == 2 and "params" in header and "Δ pts" in header
    note = next(line for line in text.splitlines() if line.startswith("Latency:"))
    assert note.rstrip().endswith("per s = samples per second at p50.")  # one line, not wrapped at 80


def test_layout_is_generic_over_new_columns(monkeypatch):
    """A column added later (e.g. feat/export's runtime) joins the layout; still nothing is cut."""
    real = columns

    def with_runtime(result):
        cols = real(result)
        return cols[:3] + [Column("", "runtime", lambda r: "onnxruntime-cpu-1.22", str, level=1)] + cols[3:]

    monkeypatch.setattr(report_bench, "columns", with_runtime)
    result = quickstart_like()
    for width in (80, 120):
        text = rendered(result, width)
        assert "…" not in text and text.count("onnxruntime-cpu-1.22") == 5


def test_very_narrow_terminal_wraps_or_drops_but_never_cuts():
    result = quickstart_like()
    text = rendered(result, 40)
    assert "…" not in text
    _, notes = bench_tables(result, 40)
    assert any(n.startswith("Left out to fit 40 columns") for n in notes) or all(
        c in text.replace("\n", "") for c in every_cell(result))


def test_info_lineage_values_are_never_cut(tiny_ckpt):
    from mhsa_cli.report.info import lineage_tables

    long_value = " ".join(f"word{i:02d}" for i in range(40))
    lineage = [{"operation": "train", "parent": None, "time": "t0",
                "settings": {"note": long_value, "out": "runs/" + "x" * 150, "lr": 0.00123456}}]
    for width in (80, 160):
        console = Console(width=width, record=True, file=io.StringIO())
        for t in lineage_tables(lineage):
            console.print(t)
        text = console.export_text()
        assert "…" not in text
        for word in long_value.split():
            assert word in text  # wrapped between words, none cut
        assert "0.00123456" in text  # exact, not rounded for display
        assert "x" * 150 in "".join(line.strip("│ ") for line in text.splitlines())  # folded, whole


@pytest.mark.parametrize("width", ["80", "160"])
def test_info_command_cuts_nothing(tiny_ckpt, width):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    result = CliRunner().invoke(app, ["info", str(tiny_ckpt)], env={"COLUMNS": width})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "Lineage 0" in result.output


def test_plural():
    from mhsa_cli.report import plural

    assert plural(1, "layer") == "1 layer" and plural(2, "layer") == "2 layers" and plural(0, "row") == "0 rows"
    assert plural(3, "child", "children") == "3 children"


def test_ci95_points_and_small_test_warning():
    import math

    from mhsa_cli.report import ci95_points, small_test_note

    # the Wilson bounds are the p where the observed p-hat is exactly z standard errors away:
    # (p_hat - p)^2 = z^2 p (1 - p) / n; center (p_hat + z^2/2n) / (1 + z^2/n)
    z, n, p_hat = 1.959964, 40, 0.95
    half = ci95_points(p_hat, n) / 100
    center = (p_hat + z * z / (2 * n)) / (1 + z * z / n)
    for bound in (center - half, center + half):
        assert (p_hat - bound) ** 2 == pytest.approx(z * z * bound * (1 - bound) / n, rel=1e-9)
    assert 100 * half == pytest.approx(7.56, abs=0.01)
    assert ci95_points(1.0, 40) > 4  # not the normal approximation's ±0
    note = small_test_note(40, 0.95)
    assert note.startswith("warning: the test split has only 40 rows") and "±7.6 points (95 % interval)" in note
    assert small_test_note(200, 0.95) is None and small_test_note(199, 0.5) is not None
    assert small_test_note(1, 1.0).startswith("warning: the test split has only 1 row:")


def test_bench_notes_warn_on_a_tiny_test_split():
    result = quickstart_like()
    _, notes = bench_tables(result, None)
    assert not any("test split has only" in n for n in notes)  # 2,000 rows
    result.task["test"] = 40
    _, notes = bench_tables(result, None)
    assert any(n.startswith("Warning: the test split has only 40 rows: a test accuracy of 99.60%") for n in notes)


def test_train_report_loss_precision_and_tiny_test_warning():
    from types import SimpleNamespace

    from mhsa_cli.report.train import render_train

    history = [{"epoch": 1, "train_loss": 1.79176, "train_acc": 0.2, "val_acc": 0.17, "seconds": 1.0},
               {"epoch": 2, "train_loss": 0.0123456, "train_acc": 0.99, "val_acc": 0.99, "seconds": 1.0}]
    metrics = {"best_epoch": 2, "val_acc": 0.99, "test_acc": 0.95, "params": 10, "train_seconds": 2.0}
    result = SimpleNamespace(history=history, metrics=metrics, out="runs/x",
                             task={"name": "order", "train": 300, "val": 100, "test": 40})
    console = Console(width=100, record=True, file=io.StringIO())
    render_train(result, console)
    text = console.export_text()
    assert "1.7918" in text and "0.0123" in text  # four decimals for every loss
    assert "only 40 rows" in text and "±7.6 points" in text


def test_piped_log_lines_are_not_wrapped():
    from mhsa_cli.progress import RichProgress

    buf = io.StringIO()
    progress = RichProgress(Console(file=buf, width=40))
    line = "train epoch   1  loss 1.7918  train acc 0.2000  val acc 0.1700  12.3s [not markup]"
    progress.log(line)
    assert buf.getvalue() == line + "\n"


def test_bar_shows_loss_with_four_decimals():
    from mhsa_cli.progress import _RichTask

    seen = {}

    class Bar:
        def update(self, task_id, advance, info):
            seen["info"] = info

    _RichTask(Bar(), 0).advance(1, loss=1.5)
    assert seen["info"] == "loss 1.5000"
    _RichTask(Bar(), 0).advance(1, loss=0.012345, step=3)
    assert seen["info"] == "loss 0.0123  step 3"
