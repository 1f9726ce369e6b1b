"""report/ (mhsa_cli/report/): tables at ordinary terminal widths never cut a value; piped output is whole."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mhsa_cli.bench.command import BenchResult, BenchRow, Ratios
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
