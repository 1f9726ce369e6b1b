"""Tests for ``mhsa bench``: timing statistics, interleaving, tables and files, bad input.

Timings themselves are never asserted (machines differ); only behaviour is.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mhsa_cli.bench.timer import CpuClock
from mhsa_cli.bench import (LatencyStats, measure_interleaved, measure_latency, percentile,
                            summarize)
from mhsa_cli.errors import MhsaError

FAST = dict(min_time=0.0, min_repeats=3, warmup=1)


# ---------------------------------------------------------------- statistics on known timings
def test_percentile_known_values():
    data = [float(v) for v in range(1, 11)]  # 1..10
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 10.0
    assert percentile(data, 50) == pytest.approx(5.5)
    assert percentile(data, 90) == pytest.approx(9.1)
    assert percentile(list(reversed(data)), 50) == pytest.approx(5.5)  # order does not matter
    assert percentile([7.0], 90) == 7.0


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_known_timings():
    s = summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], batch_size=8)
    assert s.latency_ms_p50 == pytest.approx(4.5)
    assert s.latency_ms_mean == pytest.approx(5.0)
    assert s.latency_ms_min == 2.0
    assert s.latency_ms_std == pytest.approx((32 / 7) ** 0.5)  # sample std (n-1)
    assert s.latency_ms_p90 == pytest.approx(7.0 + 0.3 * 2.0)
    assert s.repeats == 8 and s.batch_size == 8
    assert s.throughput_per_s == pytest.approx(8 / 0.0045)
    assert s.samples_ms == [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    assert summarize([3.0]).latency_ms_std == 0.0
    with pytest.raises(ValueError):
        summarize([])


# ---------------------------------------------------------------- interleaving
class Recorder(nn.Module):
    """A fake model that records the order of its calls in a shared log."""

    def __init__(self, name: str, log: list[str]):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        self.log.append("grad" if torch.is_grad_enabled() else "nograd")
        self.log.append("train" if self.training else "eval")
        return x


def test_interleaved_round_robin_order_and_equal_repeats():
    log: list[str] = []
    models = {n: (Recorder(n, log), torch.zeros(4, 3)) for n in "ABC"}
    stats = measure_interleaved(models, min_time=0.0, min_repeats=5, warmup=2, burst_ms=0)  # a call per round
    names = log[::3]
    assert names == list("ABC") * (2 + 5)  # 2 warm-up rounds, then 5 timed rounds
    assert set(log[1::3]) == {"nograd"} and set(log[2::3]) == {"eval"}
    assert all(s.repeats == 5 and s.batch_size == 4 for s in stats.values())
    assert all(m.training for m, _ in models.values())  # mode restored


def test_interleaved_stops_on_time_and_count():
    calls = {"n": 0}

    def slow(x):
        calls["n"] += 1
        t = torch.tensor(0.0)
        import time

        time.sleep(0.002)
        return t

    s = measure_interleaved({"slow": (slow, torch.zeros(1))}, min_time=0.02, min_repeats=2, warmup=0)["slow"]
    assert s.repeats >= 2 and sum(s.samples_ms) >= 20.0  # kept going until min_time
    assert calls["n"] == s.repeats


def test_warmup_fills_a_share_of_min_time():
    import time

    from mhsa_cli.bench.timer import _warm_up

    calls = {"n": 0}

    def call():
        calls["n"] += 1
        time.sleep(0.002)

    t0 = time.perf_counter()
    assert _warm_up({"a": call}, 1, 0.05) == {}  # no clock: nothing timed
    assert time.perf_counter() - t0 >= 0.05 and calls["n"] > 1  # kept going past 1 round
    calls["n"] = 0
    fastest = _warm_up({"a": call}, 1, 0.0, CpuClock())
    assert calls["n"] == 2 and 2.0 <= fastest["a"] < 50.0  # 2 calls, the second timed (each sleeps 2 ms)
    calls["n"] = 0
    assert _warm_up({"a": call}, 0, 0.05, CpuClock()) == {}
    assert calls["n"] == 0  # warmup=0: no warm-up at all


class CacheClock:
    """A fake clock: a call costs ``cost[name][0]`` ms when the call before it was the same
    model's (warm caches), ``cost[name][1]`` when it was another's or none (evicted)."""

    def __init__(self, log: list[str], cost: dict[str, tuple[float, float]]):
        self.log, self.cost = log, cost

    def time_ms(self, call):
        call()
        name = self.log[-1]
        return self.cost[name][len(self.log) < 2 or self.log[-2] != name]


def _cache_models(monkeypatch, cost):
    from mhsa_cli.bench import timer

    log: list[str] = []
    monkeypatch.setattr(timer, "make_clock", lambda device: CacheClock(log, cost))
    return log, {n: ((lambda x, n=n: log.append(n)), torch.zeros(1)) for n in cost}


def test_bursts_fill_burst_ms_at_warm_up_speed_after_one_untimed_call(monkeypatch):
    log, models = _cache_models(monkeypatch, {"A": (0.5, 0.5), "B": (3.0, 3.0)})
    stats = measure_interleaved(models, min_time=0.0, min_repeats=8, warmup=1, burst_ms=2.0)
    assert log[:4] == ["A", "A", "B", "B"]  # 1 warm-up round, the second call timed: 0.5, 3 ms -> 4, 1
    assert log[4:] == (["A"] * (1 + 4) + ["B"] * (1 + 1)) * 8  # B needs 8 rounds; each burst's first untimed
    assert (stats["A"].burst, stats["A"].repeats, stats["B"].burst, stats["B"].repeats) == (4, 32, 1, 8)


def test_burst_sizes_fill_burst_ms_up_to_what_a_model_needs():
    from mhsa_cli.bench.timer import MAX_BURST, burst_sizes

    warm = {"tiny": 0.04, "small": 0.5, "slow": 30.0}
    # 10 ms at the warm speed: 250, 20, 1 (at least 1) ...
    assert burst_sizes(warm, 10.0, min_repeats=20, min_time=0.25) == {"tiny": 250, "small": 20, "slow": 1}
    # ... but never more calls than the model needs in all: max(min_repeats, min_time / warm speed)
    assert burst_sizes(warm, 10.0, min_repeats=20, min_time=0.0) == {"tiny": 20, "small": 20, "slow": 1}
    assert burst_sizes(warm, 10.0, min_repeats=3, min_time=0.004) == {"tiny": 100, "small": 8, "slow": 1}
    assert burst_sizes({"fast": 0.001}, 10.0, min_repeats=20, min_time=1.0) == {"fast": MAX_BURST}


def test_bursts_time_warm_calls_where_a_call_per_round_times_evicted_ones(monkeypatch):
    cost = {"small": (0.1, 1.0), "big": (5.0, 6.0)}  # warm / after another model's call
    _, models = _cache_models(monkeypatch, cost)
    warm = measure_interleaved(models, min_time=0.0, min_repeats=20, warmup=2, burst_ms=2.0)
    # sized by its warm warm-up call (0.1 ms: 2 ms fits 20); every timed call warm
    assert warm["small"].latency_ms_p50 == 0.1 and warm["small"].burst == 20  # = min_repeats, the cap
    assert warm["big"].burst == 1 and warm["big"].latency_ms_p50 == 5.0
    _, models = _cache_models(monkeypatch, cost)
    cold = measure_interleaved(models, min_time=0.0, min_repeats=20, warmup=2, burst_ms=0)
    assert cold["small"].latency_ms_p50 == 1.0 and cold["big"].latency_ms_p50 == 6.0


def test_timer_repeats_a_models_timed_call_made_once(monkeypatch):
    """A model with ``timed_call(x)`` (ONNX Runtime) is timed through the call it returns, made once
    for its input; its ``__call__`` (torch wrapping per call) is never timed."""
    log: list[str] = []

    class Runtime:
        def __call__(self, x):
            log.append("wrapped")

        def timed_call(self, x):
            log.append(f"made {tuple(x.shape)}")
            return lambda: log.append("bare")

    s = measure_interleaved({"ort": (Runtime(), torch.zeros(3, 5))}, min_time=0.0, min_repeats=4, warmup=1,
                            burst_ms=0)["ort"]
    assert log == ["made (3, 5)"] + ["bare"] * (1 + 4) and s.repeats == 4


def test_measure_latency_bad_settings():
    with pytest.raises(MhsaError):
        measure_latency(lambda x: x, torch.zeros(1), min_repeats=0)
    with pytest.raises(MhsaError):
        measure_latency(lambda x: x, torch.zeros(1), min_time=-1)


def test_measure_latency_real_model():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    s = measure_latency(model, torch.randn(16, 8), **FAST)
    assert isinstance(s, LatencyStats) and s.repeats == 3 and s.batch_size == 16
    assert 0 < s.latency_ms_min <= s.latency_ms_p50 <= s.latency_ms_p90
    assert s.to_dict()["latency_ms_p50"] == s.latency_ms_p50


# ---------------------------------------------------------------- tiny checkpoints
import dataclasses  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402

from mhsa_cli.bench import (CPU_ONLY, BenchResult, BenchRow, Ratios, bench, count_weights,  # noqa: E402
                            timing_input, weight_bytes)
from mhsa_cli.checkpoint import load_checkpoint, load_model, make_meta, save_model  # noqa: E402
from mhsa_cli.config import BenchConfig, TrainConfig, build_config  # noqa: E402
from mhsa_cli.model import build_model, count_parameters  # noqa: E402
from mhsa_cli.progress import Progress  # noqa: E402
from mhsa_cli.report import human_bytes  # noqa: E402
from mhsa_cli.report.bench import _ms, bench_markdown, render_bench  # noqa: E402
from mhsa_cli.report.bench_files import bench_csv  # noqa: E402

TINY_TASK = {"n_train": 300, "n_val": 100, "n_test": 100}


def bench_cfg(checkpoints, **overrides) -> BenchConfig:
    values = {"checkpoints": [str(c) for c in checkpoints], "min_time": 0.0, "min_repeats": 3,
              "warmup": 1, "batch_sizes": [1, 4], "threads": 1}
    values.update(overrides)
    return build_config(BenchConfig, values)


def derived(parent_dir: Path, out: Path, operation: str, **model_changes) -> Path:
    """A checkpoint made from ``parent_dir``'s config with ``model_changes`` (fresh weights)."""
    parent = load_checkpoint(parent_dir)
    cfg = dataclasses.replace(parent.model_config, **model_changes)
    meta = make_meta("float", cfg, parent.task_spec, operation, {}, {}, parent=parent)
    return save_model(out, build_model(cfg, seed=1), meta)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """float (trained 1 epoch), pruned (heads [2, 0]) and student checkpoints of one task."""
    from mhsa_cli.train import train

    root = tmp_path_factory.mktemp("bench")
    train(build_config(TrainConfig, {"out": str(root / "base"), "epochs": 1, "d_model": 32, "heads": 4,
                                     "d_ff": 64, "task_options": TINY_TASK, "device": "cpu"}))
    derived(root / "base", root / "pruned", "prune", heads=[2, 0])
    derived(root / "base", root / "student", "distill", heads=[2], d_model=16, head_dim=8, d_ff=32)
    return root


def fake_int8(root: Path, monkeypatch) -> Path:
    """An int8 checkpoint rebuilt by a stand-in int8 kind (torch dynamic quantization, no checks).

    Independent of the real mhsa_cli.quantize, so bench's int8 handling is always tested.
    """
    out = root / "int8-fake"
    if not out.exists():
        parent = load_checkpoint(root / "base")
        meta = make_meta("int8", parent.model_config, parent.task_spec, "quantize", {}, {}, parent=parent)
        save_model(out, load_model(parent), meta)

    def rebuild_quantized(ckpt):
        model = build_model(ckpt.model_config)
        model.load_state_dict(ckpt.tensors)
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)

    from mhsa_cli.checkpoint import CheckpointKind
    from mhsa_cli.registry import CHECKPOINT_KINDS

    list(CHECKPOINT_KINDS)  # providers loaded first, then the real int8 entry is replaced for this test
    monkeypatch.setitem(CHECKPOINT_KINDS._entries, "int8", CheckpointKind("int8", lambda c: None, rebuild_quantized))
    return out


class RecordingProgress(Progress):
    def __init__(self):
        self.bars: list[str] = []

    def task(self, description, total=None):
        self.bars.append(description)
        return super().task(description, total)


# ---------------------------------------------------------------- a tiny run: result + files
@pytest.fixture(scope="module")
def tiny_run(ckpts):
    progress = RecordingProgress()
    out = ckpts / "bench-out"
    result = bench(bench_cfg([ckpts / "base", ckpts / "pruned", ckpts / "student"], out=str(out)), progress)
    return result, out, progress


def test_rows_hold_every_measurement(tiny_run, ckpts):
    result, _, progress = tiny_run
    assert [r.name for r in result.rows] == ["base", "pruned", "student"]
    assert [r.kind for r in result.rows] == ["float", "pruned", "student"]
    assert [r.heads for r in result.rows] == [[4, 4], [2, 0], [2]]
    assert result.baseline == "base" and [r.is_baseline for r in result.rows] == [True, False, False]
    for r in result.rows:
        model = load_model(r.path)
        assert r.params == count_parameters(model)
        assert r.size_bytes == (Path(r.path) / "model.safetensors").stat().st_size
        assert r.weight_bytes == sum(t.numel() * t.element_size() for t in model.state_dict().values())
        assert set(r.latency) == {("cpu", 1), ("cpu", 4)}
        assert all(s.repeats >= 3 and len(s.samples_ms) == s.repeats for s in r.latency.values())
        assert r.latency[("cpu", 4)].batch_size == 4
        assert r.peak_mem_bytes[("cpu", 1)] is None  # CPU: not measured (documented)
    assert result.environment["torch_threads"] == 1
    for key in ("cpu", "cpu_count", "torch", "quantized_engine", "cuda"):
        assert key in result.environment
    assert "accuracy (test split)" in progress.bars
    assert {"timing cpu · batch 1", "timing cpu · batch 4"} <= set(progress.bars)


def test_ratios_against_baseline(tiny_run):
    result, _, _ = tiny_run
    base, pruned = result.rows[0], result.rows[1]
    assert base.ratios.compression == 1.0 and base.ratios.acc_delta_pts == 0.0
    assert all(v == 1.0 for v in base.ratios.speedup.values())
    assert pruned.ratios.compression == pytest.approx(base.size_bytes / pruned.size_bytes)
    assert pruned.ratios.compression > 1.0  # fewer heads, smaller file
    assert pruned.ratios.acc_delta_pts == pytest.approx(100 * (pruned.test_acc - base.test_acc))
    key = ("cpu", 1)
    assert pruned.ratios.speedup[key] == pytest.approx(
        base.latency[key].latency_ms_p50 / pruned.latency[key].latency_ms_p50)


def test_paired_delta_counts_the_rows_each_model_alone_gets_right(tiny_run):
    """Oracle: each model's test predictions made here, outside bench, compared row by row."""
    from mhsa_cli.runtimes import predictions
    from mhsa_cli.tasks import task_from_spec

    result, _, _ = tiny_run
    base = result.rows[0]
    test = task_from_spec(load_checkpoint(base.path).task_spec).test
    right = {r.name: predictions(load_model(r.path), test) == test.y for r in result.rows}
    assert base.ratios.acc_delta["gained"] == base.ratios.acc_delta["lost"] == 0
    for r in result.rows[1:]:
        paired = r.ratios.acc_delta
        gained, lost = int((right[r.name] & ~right["base"]).sum()), int((~right[r.name] & right["base"]).sum())
        assert (paired["gained"], paired["lost"], paired["n"]) == (gained, lost, len(test))
        assert paired["delta_pts"] == pytest.approx(r.ratios.acc_delta_pts)
        assert paired["low_pts"] <= paired["delta_pts"] <= paired["high_pts"]
    assert BenchResult.from_dict(json.loads(json.dumps(result.to_dict()))).rows[1].ratios.acc_delta == \
        result.rows[1].ratios.acc_delta


def test_accuracy_equals_stored_training_accuracy(tiny_run, ckpts):
    result, _, _ = tiny_run
    stored = json.loads((ckpts / "base" / "checkpoint.json").read_text())["metrics"]["test_acc"]
    assert result.rows[0].test_acc == stored == result.rows[0].stored_test_acc


def test_json_csv_markdown_png_files(tiny_run):
    result, out, _ = tiny_run
    assert sorted(p.name for p in out.iterdir()) == ["bench.csv", "bench.json", "bench.md", "bench.png"]
    assert sorted(Path(f).name for f in result.files) == ["bench.csv", "bench.json", "bench.md", "bench.png"]
    data = json.loads((out / "bench.json").read_text())
    assert data["baseline"] == "base" and data["environment"]["torch"] == torch.__version__
    assert data["config"]["min_repeats"] == 3 and data["task"]["name"] == "order"
    cell = data["rows"][1]["cells"][0]
    st = result.rows[1].latency[("cpu", 1)]
    assert (cell["device"], cell["batch_size"]) == ("cpu", 1)
    assert cell["samples_ms"] == st.samples_ms and cell["latency_ms_p50"] == st.latency_ms_p50
    lines = (out / "bench.csv").read_text().splitlines()
    assert lines[0].startswith("model,path,runtime,precision,kind,baseline,heads,params,size_bytes")
    assert len(lines) == 1 + 3 * 2  # models x (device, batch) cells
    assert lines[3].startswith("pruned,") and ",cpu,1," in lines[3]
    assert (out / "bench.md").read_text() == bench_markdown(result)
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_markdown_highlights_best_and_explains(tiny_run):
    result, _, _ = tiny_run
    md = bench_markdown(result)
    header = md.splitlines()[2]
    for col in ("size params", "size disk", "size memory", "test acc", "cpu b=1 p50 ms", "cpu b=4 p90 ms",
                "cpu b=1 speedup", "cpu b=4 per s"):
        assert f"| {col} |" in header
    student = next(line for line in md.splitlines() if line.startswith("| student |"))
    smallest = min(result.rows, key=lambda r: r.size_bytes)
    assert smallest.name == "student" and f"**{human_bytes(smallest.size_bytes)}**" in student
    fastest = min(result.rows, key=lambda r: r.latency[("cpu", 1)].latency_ms_p50)
    p50 = _ms(fastest.latency[("cpu", 1)].latency_ms_p50)
    assert f"**{p50}**" in next(line for line in md.splitlines() if line.startswith(f"| {fastest.name}"))
    assert "CPU only: no CUDA GPU" in md or "CPU only: a CUDA GPU is present" in md
    assert "round-robin" in md and "Environment:" in md
    assert "after 1 warm-up round (at least 10% of the minimum time)" in md


def test_rich_table_contents(tiny_run):
    result, _, _ = tiny_run
    console = Console(record=True, width=250)
    render_bench(result, console)
    text = console.export_text(clear=False)
    for word in ("base*", "pruned", "student", "2,0", "p50 ms", "p90 ms", "speedup", "cpu b=4",
                 "CPU only", "quantized engine", "bench.json"):
        assert word in text
    styled = console.export_text(styles=True)
    assert "\x1b[1;32m" in styled  # best values in bold green


def test_nothing_written_without_out(ckpts, tmp_path):
    result = bench(bench_cfg([ckpts / "base"], batch_sizes=[2]))
    assert result.files == [] and not (ckpts / "base" / "bench.json").exists()


def test_existing_out_folder_refused_unless_force(ckpts, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MhsaError, match="already exists; pass --force"):
        bench(bench_cfg([ckpts / "base"], out=str(out)))
    result = bench(bench_cfg([ckpts / "base"], out=str(out), force=True, batch_sizes=[1]))
    # --force replaces the folder as a whole: the new bench files, nothing of before
    assert (out / "bench.json").is_file() and not (out / "keep.txt").exists() and result.files
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f).name for f in result.files)


def test_rewrite_without_matplotlib_leaves_no_stale_png(tmp_path, monkeypatch):
    """A folder of bench files is one set: no bench.png of an earlier run beside a new bench.md."""
    import mhsa_cli.report as report
    from mhsa_cli.report.bench_files import write_bench_files

    out = tmp_path / "b"
    write_bench_files(synthetic_result(["cpu"]), out)
    assert (out / "bench.png").is_file()
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    files = write_bench_files(synthetic_result(["cpu"]), out)
    assert sorted(p.name for p in out.iterdir()) == ["bench.csv", "bench.json", "bench.md"]
    assert sorted(p.name for p in files) == ["bench.csv", "bench.json", "bench.md"]
    assert not list(tmp_path.glob(".b.*"))  # no temporary folder left


def test_baseline_option_outside_list_is_added_first(ckpts):
    result = bench(bench_cfg([ckpts / "pruned"], baseline=str(ckpts / "student"), batch_sizes=[1]))
    assert [r.name for r in result.rows] == ["student", "pruned"] and result.baseline == "student"
    assert result.rows[1].ratios.compression == pytest.approx(result.rows[0].size_bytes / result.rows[1].size_bytes)


def test_timing_input_seed_and_seq_len(ckpts):
    from mhsa_cli.tasks import task_from_spec

    data = task_from_spec(load_checkpoint(ckpts / "base").task_spec)
    a, b = timing_input(data, 8, seed=0), timing_input(data, 8, seed=1)
    assert a.shape == (8, data.max_len) and not torch.equal(a, b)
    assert torch.equal(a, timing_input(data, 8, seed=0))
    assert timing_input(data, 250, seq_len=10).shape == (250, 10)  # rows repeated past n_val=100
    with pytest.raises(MhsaError, match="exceeds"):
        timing_input(data, 1, seq_len=data.max_len + 1)


def test_every_timing_flag_reaches_the_timer(ckpts, monkeypatch):
    from mhsa_cli.bench import command as bench_command

    seen = []

    def fake_measure(models, device, min_time, min_repeats, warmup, progress, desc, burst_ms):
        seen.append((str(device), min_time, min_repeats, warmup, burst_ms,
                     {n: tuple(x.shape) for n, (_, x) in models.items()}))
        return {n: summarize([1.0], int(x.shape[0])) for n, (_, x) in models.items()}

    monkeypatch.setattr(bench_command, "measure_interleaved", fake_measure)
    result = bench(bench_cfg([ckpts / "base", ckpts / "base", ckpts / "pruned"], min_time=0.25, min_repeats=7,
                             warmup=2, batch_sizes=[3, 3, 5], seq_len=10))
    assert [r.name for r in result.rows] == ["base", "pruned"]  # a repeated checkpoint is benched once
    assert seen == [("cpu", 0.25, 7, 2, 10.0, {"base": (3, 10), "pruned": (3, 10)}),
                    ("cpu", 0.25, 7, 2, 10.0, {"base": (5, 10), "pruned": (5, 10)})]
    assert result.timing_input.startswith("10-token")
    assert "round-robin in bursts of about 10 ms per model" in bench_markdown(result)
    seen.clear()
    cold = bench(bench_cfg([ckpts / "base"], batch_sizes=[1], burst_ms=0))  # the former order, said so
    assert seen[0][4] == 0.0 and "round-robin, one call per model per round" in bench_markdown(cold)


# ---------------------------------------------------------------- int8 + float + pruned in one bench
@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's quantized-tensor deprecation notice
def test_int8_float_pruned_in_one_bench(ckpts, monkeypatch):
    int8 = fake_int8(ckpts, monkeypatch)
    result = bench(bench_cfg([ckpts / "base", int8, ckpts / "pruned"], batch_sizes=[2]))
    base, q, pruned = result.rows
    assert (base.kind, q.kind, pruned.kind) == ("float", "int8", "pruned")
    assert q.params == base.params  # same weights, int8 storage
    assert q.weight_bytes < 0.5 * base.weight_bytes  # int8 Linear weights: ~1 byte instead of 4
    assert q.test_acc == pytest.approx(base.test_acc, abs=0.05)
    assert ("cpu", 2) in q.latency and q.ratios.speedup[("cpu", 2)] is not None


def test_weight_bytes_and_params_of_dynamic_quantized_model():
    model = nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32))
    q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    assert count_weights(q) == count_weights(model) == 64 * 32 + 32 + 2 * 32
    # int8 values + float32 scale + int64 zero point + float bias + LayerNorm, as stored in a checkpoint
    assert weight_bytes(q) == 64 * 32 * 1 + 4 + 8 + 32 * 4 + 2 * 32 * 4
    assert weight_bytes(model) == (64 * 32 + 32 + 64) * 4


def test_real_quantize_checkpoint_benches(ckpts, tmp_path):
    from mhsa_cli.config import QuantizeConfig
    from mhsa_cli.quantize import quantize

    quantize(build_config(QuantizeConfig, {"checkpoint": str(ckpts / "base"), "out": str(tmp_path / "int8")}))
    result = bench(bench_cfg([ckpts / "base", tmp_path / "int8", ckpts / "pruned"], batch_sizes=[1]))
    assert [r.kind for r in result.rows] == ["float", "int8", "pruned"]
    assert result.rows[1].weight_bytes < result.rows[0].weight_bytes
    assert result.rows[1].quantized_engine and result.rows[0].quantized_engine is None
    assert "int8 weights packed for quantized engine: int8 " in bench_markdown(result)


# ---------------------------------------------------------------- runtimes: torch + ONNX Runtime rows
@pytest.fixture(scope="module")
def ort_run(ckpts):
    """base, pruned (a 0-head layer) and student in torch and ORT (fp32, int8), with the calls recorded."""
    from mhsa_cli.bench import command as bench_command

    groups, real = [], bench_command.measure_interleaved

    def recording(models, *args, **kw):
        groups.append(list(models))
        return real(models, *args, **kw)

    bench_command.measure_interleaved = recording
    try:
        result = bench(bench_cfg([ckpts / "base", ckpts / "pruned", ckpts / "student"],
                                 runtime=["torch", "onnxruntime"], batch_sizes=[1, 4]))
    finally:
        bench_command.measure_interleaved = real
    return result, groups


def test_ort_rows_for_every_float_checkpoint_timed_together(ort_run):
    result, groups = ort_run
    names = [r.name for r in result.rows]
    assert names == [f"{m}{s}" for m in ("base", "pruned", "student")
                     for s in ("", " (ORT fp32)", " (ORT int8)")]
    assert [(r.runtime, r.precision) for r in result.rows[:3]] == [
        ("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    assert groups == [names, names]  # every model in every runtime, one interleaved run per cell
    assert all(set(r.latency) == {("cpu", 1), ("cpu", 4)} for r in result.rows)
    assert result.environment["runtimes"] == ["torch", "onnxruntime"]
    assert result.environment["ort_threads"]["intra_op"] == 1  # = torch's (--threads 1)


def test_ort_accuracy_is_measured_and_parity_recorded(ort_run, ckpts):
    from mhsa_cli.runtimes import accuracy
    from mhsa_cli.tasks import task_from_spec

    result, _ = ort_run
    data = task_from_spec(load_checkpoint(ckpts / "base").task_spec)
    by = {r.name: r for r in result.rows}
    for m in ("base", "pruned", "student"):
        t, f, q = by[m], by[f"{m} (ORT fp32)"], by[f"{m} (ORT int8)"]
        assert f.parity_max_abs_gap <= 1e-4 and t.parity_max_abs_gap is None
        assert f.test_acc == t.test_acc  # same logits within 1e-4: same predictions
        assert q.weight_bytes < f.weight_bytes  # initializers: int8 Linear weights
        assert f.weight_bytes == pytest.approx(t.weight_bytes, rel=0.1)  # the same float weights (folded)
        assert f.params == q.params == t.params and f.model == q.model == m
    assert by["base (ORT int8)"].size_bytes < by["base (ORT fp32)"].size_bytes
    assert accuracy(load_model(ckpts / "base"), data.test) == by["base"].test_acc


def test_fastest_runtime_per_model_and_cell(ort_run):
    result, _ = ort_run
    assert len(result.fastest) == 3 * 2
    for f in result.fastest:
        key = (f["device"], f["batch_size"])
        mine = [r for r in result.rows if r.model == f["model"]]
        best = min(mine, key=lambda r: r.latency[key].latency_ms_p50)
        assert f["row"] == best.name and f["latency_ms_p50"] == best.latency[key].latency_ms_p50
    md = bench_markdown(result)
    assert "| runtime |" in md.replace(" runtime |", "| runtime |", 1) or "runtime" in md.splitlines()[2]
    assert "Fastest runtime per model (p50): base: cpu b=1 " in md
    assert "ORT fp32 vs torch, max |logit gap|" in md and "ORT int8" in md
    assert ",onnxruntime,int8," in bench_csv(result)


def test_ort_threads_give_one_row_per_count_with_sessions_of_that_count(ckpts, monkeypatch):
    from mhsa_cli.runtimes import onnxruntime as ort_rt

    made = []  # intra-op thread counts of the sessions actually created
    real = ort_rt.session_options

    def recording(threads, spinning=False):
        made.append(threads)
        return real(threads, spinning)

    monkeypatch.setattr(ort_rt, "session_options", recording)
    result = bench(bench_cfg([ckpts / "base"], runtime=["torch", "onnxruntime"], batch_sizes=[1],
                             ort_threads=[1, 2]))  # torch: --threads 1
    assert [r.name for r in result.rows] == ["base", "base (ORT fp32, 1 thr)", "base (ORT int8, 1 thr)",
                                             "base (ORT fp32, 2 thr)", "base (ORT int8, 2 thr)"]
    assert [r.runtime_label for r in result.rows[1:3]] == ["ORT fp32 1 thr", "ORT int8 1 thr"]
    assert made[-4:] == [1, 1, 2, 2]  # fp32 and int8 session at each count, in row order
    assert result.environment["ort_threads"]["intra_op"] == [1, 2]
    fastest = result.fastest[0]
    best = min(result.rows, key=lambda r: r.latency[("cpu", 1)].latency_ms_p50)
    assert fastest["row"] == best.name and fastest["label"] == best.runtime_label
    md = bench_markdown(result)
    assert "1, 2 intra-op threads (a row each; torch: 1)" in md and f"{best.runtime_label} (" in md
    import csv
    import io
    line = list(csv.DictReader(io.StringIO(bench_csv(result))))[1]
    assert (line["variant"], line["providers"]) == ("1 thr", "CPUExecutionProvider")
    same = bench(bench_cfg([ckpts / "base"], runtime=["onnxruntime"], batch_sizes=[1], ort_threads=[1]))
    assert [r.name for r in same.rows] == ["base (ORT fp32)", "base (ORT int8)"]  # = torch's: no label
    assert same.environment["ort_threads"]["intra_op"] == 1


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_torch_int8_checkpoint_gets_no_ort_rows(ckpts, monkeypatch):
    int8 = fake_int8(ckpts, monkeypatch)
    result = bench(bench_cfg([ckpts / "base", int8], runtime=["onnxruntime"], batch_sizes=[1]))
    assert [r.name for r in result.rows] == ["base (ORT fp32)", "base (ORT int8)"]
    assert result.rows[0].is_baseline
    assert any("int8-fake: a torch-int8 checkpoint has no ONNX export" in n for n in result.notes)


def test_unknown_runtime(ckpts):
    assert_one_line_error(run_cli(ckpts / "base", "--runtime", "torch,onnx"), "unknown value 'onnx'")


# ---------------------------------------------------------------- CUDA (skipped without a GPU)
def synthetic_result(devices) -> BenchResult:
    """A hand-made result with known numbers (for renderer tests without measuring)."""
    keys = [(d, 1) for d in devices]

    def row(name, kind, p50, size, skip_cuda=False):
        r = BenchRow(name, f"runs/{name}", kind, [4, 4], 1000, size, size, 0.9, 0.9,
                     ratios=Ratios(1.0, 0.0, {}))
        for k in keys:
            if skip_cuda and k[0] == "cuda":
                r.skipped[k] = CPU_ONLY
            else:
                r.latency[k] = summarize([p50, p50, p50], 1)
                r.peak_mem_bytes[k] = 2**20 if k[0] == "cuda" else None
                r.ratios.speedup[k] = 1.0
        return r

    rows = [row("base", "float", 2.0, 4000), row("int8", "int8", 1.0, 1000, skip_cuda=True)]
    rows[0].is_baseline = True
    env = {"cpu": "TestCPU", "cpu_count": 2, "torch_threads": 1, "torch": "x", "quantized_engine": "x86",
           "cuda": "cuda" in devices, "gpu": "TestGPU" if "cuda" in devices else None}
    return BenchResult(rows, "base", list(devices), [1], env, {"warmup": 1, "min_repeats": 3, "min_time": 0},
                       {"name": "order", "test": 10}, "test input")


def test_int8_on_cuda_cell_is_footnoted_cpu_only():
    result = synthetic_result(["cpu", "cuda"])
    md = bench_markdown(result)
    int8_line = next(line for line in md.splitlines() if line.startswith("| int8 |"))
    assert "n/a¹" in int8_line and "¹ int8 dynamic quantization runs on the CPU only" in md
    assert "cuda b=1 peak MiB" in md and "- CPU only:" not in md
    base_line = next(line for line in md.splitlines() if line.startswith("| base* |"))
    assert base_line.endswith("| 1.00 |")  # CUDA peak MiB; a column's only value is not "best"
    csv_lines = bench_csv(result).splitlines()
    assert any(line.startswith("int8,") and ",cuda,1,CPU-only," in line for line in csv_lines)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU present")
def test_cuda_bench_with_int8(ckpts, monkeypatch):
    int8 = fake_int8(ckpts, monkeypatch)
    result = bench(bench_cfg([ckpts / "base", int8], devices=["cpu", "cuda"], batch_sizes=[2]))
    base, q = result.rows
    assert ("cuda", 2) in base.latency and base.peak_mem_bytes[("cuda", 2)] > 0
    assert q.skipped[("cuda", 2)] == CPU_ONLY and ("cpu", 2) in q.latency
    assert result.environment["gpu"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_asked_for_but_absent(ckpts):
    with pytest.raises(MhsaError, match="--devices cuda was asked for, but no CUDA GPU"):
        bench(bench_cfg([ckpts / "base"], devices=["cpu", "cuda"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU present")
def test_measure_latency_cuda():
    model = nn.Linear(16, 16)
    s = measure_latency(model, torch.randn(4, 16), device="cuda", **FAST)
    assert s.repeats == 3 and s.latency_ms_p50 > 0


# ---------------------------------------------------------------- bad input (CLI: one line, exit 2)
def run_cli(*args):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    return CliRunner().invoke(app, ["bench", *map(str, args)])


def assert_one_line_error(result, pattern: str):
    import re

    err = result.stderr if result.stderr else result.output
    assert result.exit_code == 2, result.output
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_cli_no_checkpoints():
    assert_one_line_error(run_cli(), "Missing argument")


def test_cli_missing_and_corrupt_checkpoint(ckpts, tmp_path):
    assert_one_line_error(run_cli(ckpts / "base", tmp_path / "nope"), "not found")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.json").write_text((ckpts / "base" / "checkpoint.json").read_text())
    (bad / "model.safetensors").write_bytes(b"garbage")
    assert_one_line_error(run_cli(ckpts / "base", bad), "corrupt")


def test_cli_mixed_tasks(ckpts, tmp_path):
    parent = load_checkpoint(ckpts / "base")
    other = dict(parent.task_spec, n_test=50)
    save_model(tmp_path / "other", load_model(parent),
               make_meta("float", parent.model_config, other, "train", {}, {}))
    assert_one_line_error(run_cli(ckpts / "base", tmp_path / "other"), "different tasks.*n_test")


def test_cli_bad_batch_size_and_device(ckpts):
    assert_one_line_error(run_cli(ckpts / "base", "--batch-sizes", "0"), "batch_sizes.*>= 1")
    assert_one_line_error(run_cli(ckpts / "base", "--batch-sizes", "1,-4"), "batch_sizes.*>= 1")
    assert_one_line_error(run_cli(ckpts / "base", "--devices", "tpu"), "unknown value 'tpu'")


def test_library_bad_input(ckpts):
    with pytest.raises(MhsaError, match="no checkpoints"):
        bench(bench_cfg([]))
    cfg = bench_cfg([ckpts / "base"])
    cfg.batch_sizes = [0]
    with pytest.raises(MhsaError, match="batch sizes must be >= 1"):
        bench(cfg)
    cfg = bench_cfg([ckpts / "base"])
    cfg.devices = ["gpu"]
    with pytest.raises(MhsaError, match="unknown device 'gpu'"):
        bench(cfg)


def test_cli_tiny_run_prints_table(ckpts, tmp_path):
    result = run_cli(ckpts / "base", ckpts / "pruned", "--min-time", "0", "--min-repeats", "2",
                     "--warmup", "0", "--batch-sizes", "1", "--threads", "1", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "pruned" in result.stdout and "p50 ms" in result.stdout
    assert (tmp_path / "o" / "bench.md").is_file()


def test_json_text_keeps_number_lists_on_one_line():
    import json

    from mhsa_cli.report import json_text

    obj = {"samples": [0.1, 2, -3e-05, 1.5e10, 7], "names": ["a", "b"], "nested": {"x": [[1, 2], [3]]},
           "empty": [], "mixed": [1, "two"], "n": 5}
    text = json_text(obj)
    assert json.loads(text) == obj
    assert '"samples": [0.1, 2, -3e-05, 15000000000.0, 7]' in text.splitlines()[1]
    assert '"names": [\n' in text and '"mixed": [\n' in text  # lists with strings keep one item per line


def test_busy_machine_warning_is_logged_before_timing(ckpts, monkeypatch):
    from mhsa_cli import environment

    events = []

    class Log(Progress):
        def log(self, message):
            events.append(("log", message))

        def task(self, description, total=None):
            events.append(("task", description))
            return super().task(description, total)

    monkeypatch.setattr(environment, "busy_warning", lambda threads=0: "warning: the machine is busy (load 9.0 on 2 cores)")
    bench(bench_cfg([ckpts / "base"], batch_sizes=[1]), progress=Log())
    first_timing = next(i for i, e in enumerate(events) if e[0] == "task" and e[1].startswith("timing"))
    assert ("log", "warning: the machine is busy (load 9.0 on 2 cores)") in events[:first_timing]
    events.clear()
    monkeypatch.setattr(environment, "busy_warning", lambda threads=0: None)
    bench(bench_cfg([ckpts / "base"], batch_sizes=[1]), progress=Log())
    assert not [e for e in events if e[0] == "log"]


def test_ort_rows_carry_macro_f1_from_their_own_predictions(ort_run, ckpts):
    from mhsa_cli.tasks import task_from_spec

    result, _ = ort_run
    data = task_from_spec(load_checkpoint(ckpts / "base").task_spec)
    by = {r.name: r for r in result.rows}
    for m in ("base", "student"):
        t, q = by[m], by[f"{m} (ORT int8)"]
        assert q.test_macro_f1 is not None and q.test_classes is not None
        cm = torch.tensor(q.test_classes["confusion"])  # (true, predicted) counts, as measured in ORT
        assert int(cm.sum()) == len(data.test) and cm.trace().item() / len(data.test) == pytest.approx(q.test_acc)
        tp, pred, true = cm.diag().float(), cm.sum(0).float(), cm.sum(1).float()
        f1 = [0.0 if tp[i] == 0 else float(2 * tp[i] / (pred[i] + true[i])) for i in range(len(tp))]
        assert q.test_macro_f1 == pytest.approx(sum(f1) / len(f1))  # hand formula: 2TP / (P + T)
        assert t.test_macro_f1 is not None


def test_per_round_medians_pair_models_of_different_burst_sizes():
    s = summarize([1.0, 3.0, 2.0, 10.0, 30.0, 20.0], burst=3)  # 2 rounds of 3 calls
    assert s.per_round_ms() == [2.0, 20.0]
    assert summarize([4.0, 6.0, 8.0, 9.0], burst=2).per_round_ms() == [5.0, 8.5]  # even bursts: the mean of the middle two
    assert summarize([5.0, 7.0]).per_round_ms() == [5.0, 7.0]  # burst 1: the samples themselves


# ---------------------------------------------------------------- ORT on CUDA, honestly (mocked: no GPU here)
def _ort_entry_and_row(ckpts, tmp_path):
    from mhsa_cli.bench.entries import export_entries

    (tmp_path / "exports").mkdir()
    e = export_entries(load_checkpoint(ckpts / "base"), "base", tmp_path / "exports", threads=1)[0]
    assert (e.runtime, e.precision) == ("onnxruntime", "fp32")
    return e, BenchRow(e.name, "runs/base", "float", [4, 4], 1, 1, 1, 0.9, None, runtime=e.runtime)


def test_an_ort_cuda_cell_that_fell_back_is_not_timed_and_says_so(ckpts, tmp_path, monkeypatch):
    """This onnxruntime build has no CUDA provider: told it has one, a cuda session really falls back to
    the CPU; the cell is skipped with that reason and the providers taken are recorded."""
    import warnings

    import onnxruntime as ort

    from mhsa_cli.bench.command import _cell_model

    e, row = _ort_entry_and_row(ckpts, tmp_path)
    assert e.details["providers"] == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, reason = _cell_model(e, row, torch.device("cuda"))
    assert model is None and row.providers == {"cuda": ["CPUExecutionProvider"]}
    assert reason == ("ORT fell back to the CPU (CUDA asked for, the session took CPUExecutionProvider): "
                      "not timed as a CUDA cell")
    assert _cell_model(e, row, torch.device("cpu")) == (e.model, None)


def test_an_ort_cuda_cell_on_the_cuda_provider_is_timed(ckpts, tmp_path, monkeypatch):
    """A session that took the CUDA provider (mocked) gives the cell a call to time and records it."""
    from mhsa_cli.bench.command import _cell_model
    from mhsa_cli.runtimes import onnxruntime as ort_rt

    e, row = _ort_entry_and_row(ckpts, tmp_path)
    real = ort_rt.make_session

    class TookCuda:
        def __init__(self, session):
            self.inner = session

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(ort_rt, "cuda_provider_reason", lambda: None)
    monkeypatch.setattr(ort_rt, "make_session", lambda path, threads, device="cpu", spinning=False:
                        TookCuda(real(path, threads, "cpu", spinning)))
    model, reason = _cell_model(e, row, torch.device("cuda"))
    assert reason is None and model.on_cuda
    assert row.providers == {"cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def test_fell_back_cells_and_device_copies_in_table_json_and_csv():
    result = synthetic_result(["cpu", "cuda"])
    reason = "ORT fell back to the CPU (CUDA asked for, the session took CPUExecutionProvider): not timed as a CUDA cell"
    ort_row = BenchRow("base (ORT fp32)", "runs/base", "float", [4, 4], 1000, 3000, 3000, 0.9, 0.9,
                       ratios=Ratios(1.0, 0.0, {}), runtime="onnxruntime", model="base",
                       providers={"cpu": ["CPUExecutionProvider"], "cuda": ["CPUExecutionProvider"]})
    ort_row.latency[("cpu", 1)] = summarize([1.5, 1.5, 1.5], 1)
    ort_row.skipped[("cuda", 1)] = reason
    result.rows.append(ort_row)
    md = bench_markdown(result)
    line = next(x for x in md.splitlines() if x.startswith("| base (ORT fp32) |"))
    mark = line.split("n/a")[1][0]  # the cuda cell: n/a + its footnote mark
    assert f"- {mark} {reason}" in md
    assert "On cuda: host-device copies excluded for every runtime" in md
    assert "providers taken (cpu: CPUExecutionProvider; cuda: CPUExecutionProvider)" in md
    row = next(r for r in result.to_dict()["rows"] if r["name"] == "base (ORT fp32)")
    assert row["providers"]["cuda"] == ["CPUExecutionProvider"]
    assert next(c for c in row["cells"] if c["device"] == "cuda")["skipped"] == reason
    assert BenchResult.from_dict(json.loads(json.dumps(result.to_dict()))).rows[-1].providers == ort_row.providers
    import csv
    import io
    line = next(x for x in csv.DictReader(io.StringIO(bench_csv(result)))
                if x["model"] == "base (ORT fp32)" and x["device"] == "cuda")
    assert line["providers"] == "CPUExecutionProvider"


def test_int8_methods_give_a_static_row_with_its_own_accuracy(ckpts, tmp_path):
    """--int8-methods dynamic,static: each float checkpoint gets an ORT int8-static row (a QDQ graph
    calibrated on validation rows); its accuracy equals a plain InferenceSession's on the same static
    graph made here independently (same calibration rows, so the same file)."""
    import numpy as np
    import onnxruntime as ort

    from mhsa_cli.export import write_export
    from mhsa_cli.export.int8 import calibration_batches
    from mhsa_cli.tasks import task_from_spec

    result = bench(bench_cfg([ckpts / "base"], runtime=["onnxruntime"], batch_sizes=[1],
                             int8_methods=["dynamic", "static"]))
    assert [(r.name, r.precision) for r in result.rows] == [
        ("base (ORT fp32)", "fp32"), ("base (ORT int8)", "int8"), ("base (ORT int8-static)", "int8-static")]
    data = task_from_spec(load_checkpoint(ckpts / "base").task_spec)
    write_export(load_model(ckpts / "base"), tmp_path, True, int8_methods=("static",),
                 calibration=calibration_batches(data.val))
    s = ort.InferenceSession(str(tmp_path / "model.int8-static.onnx"), providers=["CPUExecutionProvider"])
    pred = np.argmax(s.run(None, {"input": data.test.x.numpy()})[0], axis=-1)
    assert result.rows[2].test_acc == pytest.approx(float((pred == data.test.y.numpy()).mean()))
    assert result.rows[2].weight_bytes < result.rows[0].weight_bytes
    md = bench_markdown(result)  # the note says how each int8 row was made
    assert "int8-static = static QDQ int8 (quantize_static, calibrated on validation rows)" in md
    assert "one weight scale per tensor;" in md and result.config["per_channel"] is False
    result.config["per_channel"] = True
    assert "one weight scale per output channel (--per-channel);" in bench_markdown(result)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ort_alone_on_a_torch_int8_baseline_is_one_line(ckpts, monkeypatch):
    int8 = fake_int8(ckpts, monkeypatch)
    assert_one_line_error(run_cli(int8, "--runtime", "onnxruntime"),
                          "cannot run the baseline .*int8-fake: a torch-int8 checkpoint has no ONNX form")
    assert_one_line_error(run_cli(ckpts / "base", int8, "--baseline", int8, "--runtime", "onnxruntime"),
                          "cannot run the baseline")


def test_symlink_loop_is_one_line(ckpts, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert_one_line_error(run_cli(tmp_path / "a"), "checkpoint .*a goes through a symlink loop")
    assert_one_line_error(run_cli(ckpts / "base", "--baseline", tmp_path / "a"), "symlink loop")
    assert_one_line_error(run_cli(ckpts / "base", "--out", tmp_path / "a"), "symlink loop")


@pytest.mark.parametrize("per_channel", [False, True])
def test_ort_int8_rows_follow_per_channel(ckpts, tmp_path, per_channel):
    """--per-channel reaches the ORT int8 graph bench times: one weight scale per output channel."""
    import onnx

    from mhsa_cli.bench.entries import build_entries
    from mhsa_cli.checkpoint import load_checkpoint

    entries, _ = build_entries([load_checkpoint(ckpts / "base")], ["base"], ["onnxruntime"], tmp_path, 1,
                               per_channel=per_channel)
    (int8,) = [e for e in entries if e.precision == "int8"]
    assert int8.details["quantization"]["per_channel"] is per_channel
    scales = [i for i in onnx.load(str(int8.folder / int8.details["file"])).graph.initializer
              if i.data_type == onnx.TensorProto.FLOAT and i.name.endswith("scale")]
    assert any(len(i.dims) == 1 and i.dims[0] > 1 for i in scales) is per_channel
