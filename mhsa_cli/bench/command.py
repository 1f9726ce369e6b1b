"""``mhsa bench``: accuracy, size and latency of checkpoints side by side.

:func:`bench` loads the checkpoints (all of one task) in each runtime asked for
(:mod:`.entries`: torch, and ONNX Runtime fp32 / int8 of float checkpoints),
measures accuracy in that runtime on
the test split, sizes (:mod:`.sizes`) and latency on one real-shaped
validation batch per (device, batch size) (:func:`timing_input`, timed by
:mod:`.timer`), and the ratios against a baseline. It returns a
:class:`BenchResult` of :class:`BenchRow` rows; :mod:`mhsa_cli.report.bench`
renders it.

On CUDA every runtime's timed call starts and ends on the GPU (``COPIES``: no
host-device copy is timed, for torch and ORT alike), each row records the
execution providers its sessions took (``BenchRow.providers``), and an ORT
session that fell back to the CPU is not timed in a CUDA column: its cell says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import MhsaError
from ..progress import NULL, Progress
from .entries import (PARITY_ROWS, RUNTIME_LABELS, TORCH, Entry, build_entries, check_runtimes, fastest_rows,
                      onnx_sizes, ort_thread_counts, parity_gap)
from .sizes import count_weights, cuda_peak_memory_bytes, weight_bytes
from .timer import measure_interleaved


from .result import COPIES, CPU_ONLY, KIND_BY_OPERATION, BenchResult, BenchRow, Key


def _check_inputs(cfg: Any) -> tuple[list[str], list[int]]:
    """Validate devices and batch sizes; return them de-duplicated, in order."""
    from ..errors import choice

    if not cfg.checkpoints:
        raise MhsaError("no checkpoints given; pass one or more checkpoint folders")
    devices = [choice("device", str(d), ("cpu", "cuda")) for d in dict.fromkeys(cfg.devices)]
    if not devices:
        raise MhsaError("no devices given; choose from: cpu, cuda")
    if "cuda" in devices and not torch.cuda.is_available():
        raise MhsaError(f"--devices cuda was asked for, but no CUDA GPU is available here (torch "
                        f"{torch.__version__}, cuda={torch.version.cuda}); use --devices cpu")
    sizes = list(dict.fromkeys(int(b) for b in cfg.batch_sizes))
    if not sizes or min(sizes) <= 0:
        raise MhsaError(f"batch sizes must be >= 1, got {cfg.batch_sizes}")
    return devices, sizes


def _load_all(paths: list[str], baseline: str | None) -> tuple[list[Any], Any]:
    """Load checkpoints (the baseline first if it is not among them), dropping repeats."""
    from pathlib import Path

    from ..checkpoint import load_checkpoint, resolve_path

    ordered = list(paths)
    base_path = resolve_path(baseline or paths[0], "checkpoint")
    if all(resolve_path(p, "checkpoint") != base_path for p in paths):
        ordered.insert(0, str(baseline))
    unique: dict[Path, str] = {}
    for p in ordered:
        unique.setdefault(resolve_path(p, "checkpoint"), p)
    ckpts = [load_checkpoint(p) for p in unique.values()]
    base = next(c for c in ckpts if c.path.resolve() == base_path)
    return ckpts, base


def _check_baseline_runs(base: Any, runtimes: list[str]) -> None:
    """The baseline must get a row: a torch-int8 checkpoint has none in ORT (no ONNX form).

    Raises:
        MhsaError: ``--runtime onnxruntime`` alone with a non-float baseline.
    """
    if TORCH not in runtimes and base.kind != "float":
        raise MhsaError(f"--runtime {','.join(runtimes)} cannot run the baseline {base.path}: a torch-{base.kind} "
                        "checkpoint has no ONNX form; add --runtime torch, or bench its float parent "
                        "(whose ORT int8 row is the counterpart)")


def _check_same_task(ckpts: list[Any]) -> dict[str, Any]:
    """All checkpoints must be judged on the same test split: same task spec."""
    first = ckpts[0]
    for c in ckpts[1:]:
        if c.task_spec == first.task_spec:
            continue
        a, b = first.task_spec, c.task_spec
        if a.get("name") != b.get("name"):
            why = f"task '{a.get('name')}' vs '{b.get('name')}'"
        else:
            key = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            why = f"task '{a.get('name')}' with different '{key}'"
        raise MhsaError(f"cannot compare {first.path} and {c.path}: checkpoints of different tasks "
                        f"({why}); bench needs one test split for all")
    return first.task_spec


def _display_kind(ckpt: Any) -> str:
    lineage = ckpt.meta.get("lineage") or [{}]
    return KIND_BY_OPERATION.get(lineage[-1].get("operation"), ckpt.kind)


def _names(ckpts: list[Any]) -> list[str]:
    """Folder names, or full paths where two folders share a name."""
    names = [c.name for c in ckpts]
    return [n if names.count(n) == 1 else str(c.path) for n, c in zip(names, ckpts)]


def timing_input(data: Any, batch_size: int, seq_len: int | None = None, seed: int = 0) -> torch.Tensor:
    """A real-shaped timing batch: seeded validation rows (repeated if too few), full length
    (a ragged split, e.g. text: cut to the longest of the picked rows, as length-aware
    batching does).

    Args:
        data: the task (its validation split is used; the test split is for accuracy only).
        batch_size: rows in the batch.
        seq_len: cut inputs to this length (default: the task's max_len).
        seed: which validation rows are picked.

    Raises:
        MhsaError: ``seq_len`` longer than the task's inputs.
    """
    x = data.val.x
    if seq_len is not None and seq_len > x.shape[1]:
        raise MhsaError(f"--seq-len {seq_len} exceeds the task's input length {x.shape[1]}")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    rows = order[torch.arange(batch_size) % len(order)]
    if seq_len is None and data.val.ragged:
        return data.val.rows(rows)[0].contiguous()
    return x[rows][:, : seq_len or x.shape[1]].contiguous()


def _calibration(cfg: Any, data: Any) -> list[Any] | None:
    """Validation batches for static int8 (never test), when it is asked for."""
    if "static" not in cfg.int8_methods:
        return None
    from ..export.int8 import calibration_batches

    return calibration_batches(data.val)


def _torch_row(e: Entry, data: Any) -> tuple[BenchRow, torch.Tensor]:
    """Accuracy (CPU, test split), sizes and parameter counts of a torch entry; its (N,) test predictions."""
    from ..batching import predict_logits
    from ..checkpoint import size_on_disk
    from ..metrics import classification_report

    stored = e.ckpt.meta.get("metrics", {}).get("test_acc")
    pred = predict_logits(e.model, data.test, "cpu").argmax(-1)  # (N,); its accuracy = evaluate's
    report = classification_report(data.test.y, pred, data.labels)
    return BenchRow(
        name=e.name, path=str(e.ckpt.path), kind=_display_kind(e.ckpt),
        heads=list(e.ckpt.model_config.heads), params=count_weights(e.model),
        size_bytes=size_on_disk(e.ckpt.path), weight_bytes=weight_bytes(e.model),
        test_acc=report.accuracy,
        stored_test_acc=float(stored) if isinstance(stored, (int, float)) else None,
        quantized_engine=engine_label(getattr(e.model, "quantization", None)),
        runtime=e.runtime, precision=e.precision, model=e.model_name,
        test_macro_f1=report.macro_f1, test_classes=report.to_dict()), pred


def _ort_row(e: Entry, data: Any, float_model: nn.Module) -> tuple[BenchRow, torch.Tensor]:
    """The same for an ORT entry: accuracy measured in ORT, ONNX file and initializer bytes,
    parameters of the source model, and the logit gap to torch on validation rows."""
    from ..metrics import classification_report
    from ..runtimes import predictions

    size, weights = onnx_sizes(e)
    pred = predictions(e.model, data.test)  # (N,) in ORT
    report = classification_report(data.test.y, pred, data.labels)
    stored = e.ckpt.meta.get("metrics", {}).get("test_acc") if e.precision == "fp32" else None
    return BenchRow(
        name=e.name, path=str(e.ckpt.path), kind=_display_kind(e.ckpt), heads=list(e.ckpt.model_config.heads),
        params=count_weights(float_model), size_bytes=size, weight_bytes=weights,
        test_acc=report.accuracy, test_macro_f1=report.macro_f1, test_classes=report.to_dict(),
        stored_test_acc=float(stored) if isinstance(stored, (int, float)) else None,
        runtime=e.runtime, precision=e.precision, model=e.model_name, variant=e.variant,
        parity_max_abs_gap=parity_gap(float_model, e, data.val.x[:PARITY_ROWS]),
        providers={"cpu": list(e.details["providers"])} if "providers" in e.details else {}), pred


def _measure_rows(entries: list[Entry], data: Any, progress: Progress) -> tuple[list[BenchRow], list[torch.Tensor]]:
    """Accuracy (test split, in each entry's runtime), sizes and parameter counts of every entry,
    and per entry which test rows it gets right ((N,) bool, for the paired comparison)."""
    from ..checkpoint import load_model

    measured, float_models = [], {}
    with progress.task("accuracy (test split)", total=len(entries)) as bar:
        for e in entries:
            if e.folder is None:  # a runtime that reads the checkpoint itself (torch and the like)
                measured.append(_torch_row(e, data))
                if e.runtime == TORCH:
                    float_models.setdefault(e.ckpt.path, e.model)
            else:
                if e.ckpt.path not in float_models:
                    float_models[e.ckpt.path] = load_model(e.ckpt)
                measured.append(_ort_row(e, data, float_models[e.ckpt.path]))
            bar.advance(1)
    return [r for r, _ in measured], [pred == data.test.y for _, pred in measured]


def engine_label(settings: dict | None) -> str | None:
    """The int8 engine a model runs with, and the recorded one after a fallback."""
    if not settings:
        return None
    rec = settings.get("engine_recorded")
    return settings["engine"] + (f" (recorded {rec}: not supported here)" if rec else "")


def _cell_model(e: Entry, row: BenchRow, device: torch.device) -> tuple[Any, str | None]:
    """The callable to time on ``device``, or None and the reason it does not run there.

    A runtime loaded for CUDA records the providers its session took in ``row.providers``;
    one that fell back to the CPU is not timed (a CPU number in a CUDA column) and the
    reason says so."""
    from ..runtimes import RUNTIMES, load_runtime

    if device.type != "cuda":
        return e.model, None
    if e.runtime == TORCH:  # dynamic int8 kernels exist for CPU only
        return (None, CPU_ONLY) if e.ckpt.kind == "int8" else (e.model, None)
    reason = RUNTIMES[e.runtime].unavailable("cuda", e.precision)
    if reason:
        return None, reason
    folder = e.folder if e.folder is not None else e.ckpt.path
    loaded = load_runtime(e.runtime, folder, e.precision, torch.get_num_threads(), "cuda")
    if "providers" in loaded.details:
        row.providers["cuda"] = list(loaded.details["providers"])
    if loaded.details.get("fell_back"):
        label = RUNTIME_LABELS.get(e.runtime, e.runtime)
        return None, f"{label} fell back to the CPU ({loaded.details['fell_back']}): not timed as a CUDA cell"
    return loaded.call, None


def _time_cell(entries: list[Entry], rows: list[BenchRow], key: Key, x: torch.Tensor,
               cfg: Any, progress: Progress) -> None:
    """Time every applicable model (every runtime) on one (device, batch size), interleaved."""
    device = torch.device(key[0])
    group = {}
    for e, row in zip(entries, rows):
        model, reason = _cell_model(e, row, device)
        if reason:
            row.skipped[key] = reason
        else:
            group[e.name] = (model, x)
    peaks: dict[str, int | None] = {n: None for n in group}
    modules = {n: v for n, v in group.items() if isinstance(v[0], nn.Module)}
    if device.type == "cuda" and modules:
        peaks.update(_cuda_peaks(modules, device))
    stats = measure_interleaved(group, device, cfg.min_time, cfg.min_repeats, cfg.warmup,
                                progress, desc=f"timing {key[0]} · batch {key[1]}", burst_ms=cfg.burst_ms)
    for row in rows:
        if row.name in stats:
            row.latency[key], row.peak_mem_bytes[key] = stats[row.name], peaks[row.name]


def _cuda_peaks(group: Mapping[str, tuple[nn.Module, torch.Tensor]], device: torch.device) -> dict[str, int | None]:
    """Each model's CUDA peak alone (others on the CPU), after one warm-up pass
    so lazily created library workspaces are not charged to the first model."""
    for m, _ in group.values():
        m.to("cpu")
    first, x = next(iter(group.values()))
    cuda_peak_memory_bytes(first, x, device)  # warm-up: cuBLAS handles and workspaces
    return {n: cuda_peak_memory_bytes(m, x, device) for n, (m, x) in group.items()}


def _fill_ratios(rows: list[BenchRow], base: BenchRow, correct: list[torch.Tensor], base_correct: torch.Tensor) -> None:
    """Each row against the baseline; ``correct`` / ``base_correct``: (N,) bool, test row i right."""
    from ..metrics import paired_delta

    for r, c in zip(rows, correct):
        r.ratios.compression = base.size_bytes / r.size_bytes if r.size_bytes else None
        r.ratios.acc_delta_pts = 100.0 * (r.test_acc - base.test_acc)
        r.ratios.acc_delta = paired_delta(c, base_correct).to_dict() if len(c) else None
        for key, st in r.latency.items():
            b = base.latency.get(key)
            r.ratios.speedup[key] = b.latency_ms_p50 / st.latency_ms_p50 if b and st.latency_ms_p50 > 0 else None


def _exports(runtimes: list[str]) -> bool:
    """True when a chosen runtime reads export folders (bench exports each float checkpoint)."""
    from ..runtimes import RUNTIMES

    return any(RUNTIMES[r].reads == "export" for r in runtimes)


def _bench_environment(devices: list[str], runtimes: list[str], ort_threads: list[int]) -> dict[str, Any]:
    from ..environment import environment
    from ..runtimes import RUNTIMES

    env = environment()
    for name in runtimes:
        env.update(RUNTIMES[name].versions())
    env["runtimes"] = runtimes
    if "onnxruntime" in runtimes:  # ORT sessions: torch's thread count (set before this is called) or --ort-threads
        t = torch.get_num_threads()
        counts = ort_thread_counts(t, ort_threads)
        env["ort_threads"] = {"intra_op": counts if counts != [t] else t, "inter_op": 1, "spinning": False}
    env["torch_interop_threads"] = torch.get_num_interop_threads()
    env["clock"] = {"cpu": "time.perf_counter per call",
                    "cuda": "torch.cuda.Event pairs, synchronized"}
    if "cuda" in devices:
        env["device_copies"] = COPIES
    env["devices_timed"] = devices
    return env


def bench(cfg: Any, progress: Progress = NULL) -> BenchResult:
    """``mhsa bench``: accuracy, size and latency of checkpoints side by side.

    Args:
        cfg: a :class:`mhsa_cli.config.BenchConfig`.
        progress: bars for accuracy and for each (device, batch size) timing.

    Returns:
        :class:`BenchResult`; with ``cfg.out`` also writes bench.json / .csv /
        .md (/ .png with matplotlib) there, listed in ``result.files``.

    Raises:
        MhsaError: no checkpoints, missing/corrupt checkpoint, checkpoints of
            different tasks, batch size <= 0, unknown device or runtime, CUDA asked
            for but absent, or an existing non-empty ``--out`` without ``--force``.
    """
    import tempfile

    from ..checkpoint import check_output_dir
    from ..config import to_dict
    from ..environment import busy_warning, set_threads
    from ..tasks import task_from_spec

    devices, sizes = _check_inputs(cfg)
    runtimes = check_runtimes(cfg.runtime)
    if cfg.out:
        check_output_dir(cfg.out, cfg.force, inputs=list(cfg.checkpoints) + [cfg.baseline])
    ckpts, base_ckpt = _load_all(list(cfg.checkpoints), cfg.baseline)
    _check_baseline_runs(base_ckpt, runtimes)
    data = task_from_spec(_check_same_task(ckpts))
    threads_before = torch.get_num_threads()
    entries: list[Entry] = []
    with tempfile.TemporaryDirectory(prefix="mhsa-bench-onnx-") as tmp:
        try:
            set_threads(cfg.threads)
            busy = busy_warning(cfg.threads)
            if busy:  # before the timing: a loaded machine makes every number slow and noisy
                progress.log(busy)
            with progress.task("loading" + (" and exporting to ONNX" if _exports(runtimes) else ""), total=1) as bar:
                entries, notes = build_entries(ckpts, _names(ckpts), runtimes, Path(tmp), torch.get_num_threads(),
                                               list(cfg.ort_threads), tuple(cfg.int8_methods),
                                               _calibration(cfg, data), cfg.per_channel)
                bar.advance(1)
            env = _bench_environment(devices, runtimes, list(cfg.ort_threads))
            rows, correct = _measure_rows(entries, data, progress)
            for key in [(d, b) for d in devices for b in sizes]:
                _time_cell(entries, rows, key, timing_input(data, key[1], cfg.seq_len, cfg.seed), cfg, progress)
        finally:
            torch.set_num_threads(threads_before)
            for e in entries:
                if isinstance(e.model, nn.Module):
                    e.model.to("cpu")
    i_base = next(i for i, e in enumerate(entries) if e.ckpt is base_ckpt)
    base = rows[i_base]
    base.is_baseline = True
    _fill_ratios(rows, base, correct, correct[i_base])
    seq = cfg.seq_len or data.max_len
    what = f"{seq}-token" if cfg.seq_len or not data.val.ragged else \
        f"cut to the longest picked row (max {seq} tokens)"
    result = BenchResult(rows, base.name, devices, sizes, env, to_dict(cfg), data.summary(),
                         f"{what} rows of the validation split (seed {cfg.seed}), same tensor for all models",
                         notes=notes, fastest=fastest_rows(rows, [(d, b) for d in devices for b in sizes]))
    if cfg.out:
        from ..report.bench_files import write_bench_files

        result.files = [str(p) for p in write_bench_files(result, cfg.out)]
    return result
