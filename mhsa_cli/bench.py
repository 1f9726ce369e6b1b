"""Measurement only: accuracy, size, latency and memory of checkpoints.

:func:`measure_latency` and :func:`measure_interleaved` are the one timer of the
project (prune / quantize / distill reuse them). Method:

* eval mode + ``torch.inference_mode``; ``warmup`` untimed calls first;
* every call is timed on its own (``time.perf_counter`` on CPU; on CUDA a pair
  of ``torch.cuda.Event(enable_timing=True)`` after a ``synchronize``), so the
  result is a distribution: p50 / p90 / mean / min / std in milliseconds;
* repeats continue until a model has both ``min_time`` seconds of timed calls
  and ``min_repeats`` calls;
* several models are timed **round-robin** (A, B, C, A, B, C, ...) so slow
  drift of the machine (frequency scaling, other load) hits all of them alike,
  and every model gets the same number of repeats;
* Python's garbage collector is paused while timing (as ``timeit`` does).

:func:`bench` (``mhsa bench``) adds accuracy on the test split, parameters,
size on disk, in-memory weight bytes, CUDA peak memory and ratios against a
baseline; :mod:`mhsa_cli.report.bench` renders the :class:`BenchResult`.
"""

from __future__ import annotations

import gc
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from .errors import MhsaError
from .progress import NULL, Progress

# --------------------------------------------------------------------------- statistics


@dataclass
class LatencyStats:
    """Statistics of per-call latencies of one model on one input.

    ``throughput_per_s`` is samples per second at the median latency:
    ``batch_size / (latency_ms_p50 / 1000)``.
    """

    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_mean: float
    latency_ms_min: float
    latency_ms_std: float
    repeats: int
    batch_size: int = 1
    throughput_per_s: float = 0.0
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-able (``samples_ms`` included)."""
        return asdict(self)


def percentile(samples: list[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (numpy's default method).

    Args:
        samples: values in any order (not modified).
        q: percentile in [0, 100].

    Returns:
        The interpolated value: rank ``q/100 * (n-1)`` of the sorted samples.

    Raises:
        ValueError: no samples, or ``q`` outside [0, 100].

    Example:
        >>> percentile([1, 2, 3, 4], 50)
        2.5
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    s = sorted(samples)
    rank = q / 100.0 * (len(s) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (rank - lo)


def summarize(samples_ms: list[float], batch_size: int = 1) -> LatencyStats:
    """Turn per-call latencies (ms) into :class:`LatencyStats`.

    Args:
        samples_ms: one latency per timed call, in milliseconds.
        batch_size: samples per call, for ``throughput_per_s``.

    Returns:
        p50 / p90 / mean / min / sample std (n-1; 0 for one sample), the count,
        the throughput at the median and a copy of the samples.

    Raises:
        ValueError: no samples.
    """
    if not samples_ms:
        raise ValueError("no latency samples to summarize")
    n = len(samples_ms)
    mean = sum(samples_ms) / n
    var = sum((s - mean) ** 2 for s in samples_ms) / (n - 1) if n > 1 else 0.0
    p50 = percentile(samples_ms, 50)
    return LatencyStats(
        latency_ms_p50=p50,
        latency_ms_p90=percentile(samples_ms, 90),
        latency_ms_mean=mean,
        latency_ms_min=min(samples_ms),
        latency_ms_std=math.sqrt(var),
        repeats=n,
        batch_size=batch_size,
        throughput_per_s=batch_size / (p50 / 1000.0) if p50 > 0 else float("inf"),
        samples_ms=list(samples_ms),
    )


# --------------------------------------------------------------------------- clocks


class CpuClock:
    """Wall-clock time of one call with ``time.perf_counter``."""

    def time_ms(self, call: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        call()
        return (time.perf_counter() - t0) * 1e3


class CudaClock:
    """GPU time of one call between two CUDA events.

    The stream is synchronised before the start event (nothing of an earlier
    call is still running) and after the end event (the call has finished), so
    launch overhead of a launch-bound model is included, as a user sees it.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time_ms(self, call: Callable[[], Any]) -> float:
        torch.cuda.synchronize(self.device)
        self.start.record()
        call()
        self.end.record()
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


def make_clock(device: torch.device | str) -> CpuClock | CudaClock:
    """The right clock for ``device`` (CUDA events on GPUs, perf_counter elsewhere)."""
    device = torch.device(device)
    return CudaClock(device) if device.type == "cuda" else CpuClock()


# --------------------------------------------------------------------------- timing


@contextmanager
def _timing_mode(modules: list[Any]) -> Iterator[None]:
    """eval() every nn.Module, inference_mode, GC paused; all restored after."""
    training = [(m, m.training) for m in modules if isinstance(m, nn.Module)]
    for m, _ in training:
        m.eval()
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            yield
    finally:
        if gc_was_enabled:
            gc.enable()
        for m, was in training:
            m.train(was)


def _prepare(model: Any, x: Any, device: torch.device) -> Callable[[], Any]:
    """Move an nn.Module (in place) and a tensor input to ``device``; return the call."""
    if isinstance(model, nn.Module):
        model.to(device)
    if isinstance(x, torch.Tensor):
        x = x.to(device)
    return lambda: model(x)


def _batch_size(x: Any) -> int:
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1


def _fraction_done(samples: Mapping[str, list[float]], min_time: float, min_repeats: int) -> float:
    """How far the slowest-to-finish model is: min over models of its time and count fractions."""
    def one(s: list[float]) -> float:
        time_part = 1.0 if min_time <= 0 else sum(s) / 1e3 / min_time
        return min(time_part, len(s) / min_repeats)

    return min((one(s) for s in samples.values()), default=1.0)


def _check_settings(min_time: float, min_repeats: int, warmup: int) -> None:
    if min_time < 0 or min_repeats < 1 or warmup < 0:
        raise MhsaError(f"timing needs min_time >= 0, min_repeats >= 1 and warmup >= 0 "
                        f"(got {min_time}, {min_repeats}, {warmup})")


def measure_interleaved(models: Mapping[str, tuple[Any, Any]], device: torch.device | str = "cpu",
                        min_time: float = 1.0, min_repeats: int = 20, warmup: int = 5,
                        progress: Progress = NULL, desc: str = "timing") -> dict[str, LatencyStats]:
    """Time several models round-robin: one call of A, one of B, ..., repeated.

    Rounds continue until **every** model has at least ``min_time`` seconds of
    timed calls and at least ``min_repeats`` calls; all models therefore get the
    same number of repeats, and machine drift affects them alike.

    Args:
        models: name -> (model, input). Models are called as ``model(x)``;
            nn.Modules are moved to ``device`` in place and put in eval mode
            (their train/eval mode is restored afterwards); tensors are copied
            to ``device``.
        device: "cpu" or "cuda[:i]" (CUDA events + synchronize there).
        min_time: seconds of timed calls each model needs (>= 0).
        min_repeats: timed calls each model needs (>= 1).
        warmup: untimed rounds before timing (>= 0).
        progress: one bar, complete when the stopping rule is met.
        desc: the bar's description.

    Returns:
        name -> :class:`LatencyStats` (``batch_size`` from the input's first dim).

    Raises:
        MhsaError: negative ``min_time`` or ``warmup``, ``min_repeats`` < 1.

    Example:
        >>> stats = measure_interleaved({"a": (model_a, x), "b": (model_b, x)}, min_time=0.5)
        >>> stats["a"].latency_ms_p50 / stats["b"].latency_ms_p50  # b's speedup over a
    """
    _check_settings(min_time, min_repeats, warmup)
    device = torch.device(device)
    calls = {name: _prepare(m, x, device) for name, (m, x) in models.items()}
    clock = make_clock(device)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    with _timing_mode([m for m, _ in models.values()]):
        for _ in range(warmup):
            for call in calls.values():
                call()
        with progress.task(desc, total=100) as bar:
            shown = 0
            while calls and _fraction_done(samples, min_time, min_repeats) < 1.0:
                for name, call in calls.items():
                    samples[name].append(clock.time_ms(call))
                now = int(100 * min(1.0, _fraction_done(samples, min_time, min_repeats)))
                bar.advance(now - shown)
                shown = now
    return {name: summarize(samples[name], _batch_size(x)) for name, (_, x) in models.items()}


def measure_latency(model: Any, x: Any, device: torch.device | str = "cpu", min_time: float = 1.0,
                    min_repeats: int = 20, warmup: int = 5, progress: Progress = NULL) -> LatencyStats:
    """Latency of ``model(x)``: warm-up, then repeats until ``min_time`` s and ``min_repeats``.

    Args:
        model: a callable, usually an nn.Module (moved to ``device``, eval mode).
        x: its input (copied to ``device``); its first dimension is the batch size.
        device: "cpu" or "cuda[:i]".
        min_time, min_repeats, warmup, progress: see :func:`measure_interleaved`.

    Returns:
        :class:`LatencyStats` with p50 / p90 / mean / min / std in milliseconds.

    Raises:
        MhsaError: invalid timing settings.

    Example:
        >>> measure_latency(model, torch.zeros(1, 24, dtype=torch.long)).latency_ms_p50
    """
    return measure_interleaved({"model": (model, x)}, device, min_time, min_repeats, warmup,
                               progress)["model"]


# --------------------------------------------------------------------------- sizes


def _is_dynamic_quantized_linear(module: nn.Module) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return isinstance(module, DynamicQuantizedLinear)


def _tensor_bytes(t: torch.Tensor | None) -> int:
    """Bytes of a tensor; for a quantized one: int8 values + its scales and zero points."""
    if t is None:
        return 0
    n = t.numel() * t.element_size()
    if t.is_quantized:
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                           torch.per_channel_affine_float_qparams):
            s, z = t.q_per_channel_scales(), t.q_per_channel_zero_points()
            n += s.numel() * s.element_size() + z.numel() * z.element_size()
        else:
            n += 8 + 8  # one double scale, one int64 zero point
    return n


def _own_weight_bytes(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        if _is_dynamic_quantized_linear(m):
            total += _tensor_bytes(m.weight()) + _tensor_bytes(m.bias())
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
            total += _tensor_bytes(t)
    return total


def weight_bytes(model: nn.Module) -> int:
    """In-memory bytes of a model's weights (float tensors, int8 values + scales).

    Uses ``mhsa_cli.quantize.model_weight_bytes`` when that exists (one
    definition for the project), else counts parameters and buffers plus the
    packed weights of dynamic-quantized ``Linear`` layers.
    """
    try:
        from .quantize import model_weight_bytes
    except ImportError:
        return _own_weight_bytes(model)
    return int(model_weight_bytes(model))


def count_weights(model: nn.Module) -> int:
    """Weight elements: float parameters + int8 weights / biases of quantized Linear layers."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if _is_dynamic_quantized_linear(m):
            bias = m.bias()
            n += m.weight().numel() + (bias.numel() if bias is not None else 0)
    return n


def cuda_peak_memory_bytes(model: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """Peak CUDA memory of one forward pass of ``model`` alone: weights + input + activations.

    Measured with ``torch.cuda.max_memory_allocated`` above what was allocated
    before the model was moved to the GPU; other models must be off the GPU.
    The model is moved to ``device`` and back to the CPU.
    """
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    model.to(device)
    with torch.inference_mode():
        model(x.to(device))
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    model.to("cpu")
    return int(peak)


# --------------------------------------------------------------------------- bench

Key = tuple[str, int]  # (device, batch size)
CPU_ONLY = "CPU-only"
# lineage operation -> the kind shown in tables
KIND_BY_OPERATION = {"train": "float", "prune": "pruned", "quantize": "int8", "distill": "student"}


@dataclass
class Ratios:
    """A model against the baseline: >1 is better for speedup and compression."""

    compression: float | None = None  # baseline size on disk / model size on disk
    acc_delta_pts: float | None = None  # (model - baseline) test accuracy, percentage points
    speedup: dict[Key, float | None] = field(default_factory=dict)  # baseline p50 / model p50


@dataclass
class BenchRow:
    """One model's measurements. ``latency`` etc. are keyed by (device, batch size)."""

    name: str
    path: str
    kind: str  # float | pruned | int8 | student
    heads: list[int]
    params: int
    size_bytes: int  # weights file on disk
    weight_bytes: int  # weights in memory
    test_acc: float
    stored_test_acc: float | None  # from the checkpoint's metrics
    is_baseline: bool = False
    quantized_engine: str | None = None  # int8: the engine its weights are packed for
    latency: dict[Key, LatencyStats] = field(default_factory=dict)
    peak_mem_bytes: dict[Key, int | None] = field(default_factory=dict)  # CUDA only, else None
    skipped: dict[Key, str] = field(default_factory=dict)  # cells that do not apply, and why
    ratios: Ratios = field(default_factory=Ratios)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; per-cell data as a list of {device, batch_size, ...} entries."""
        d = {k: v for k, v in asdict(self).items() if k not in ("latency", "peak_mem_bytes", "skipped", "ratios")}
        d["compression"], d["acc_delta_pts"] = self.ratios.compression, self.ratios.acc_delta_pts
        keys = list(dict.fromkeys([*self.latency, *self.skipped]))
        d["cells"] = [{"device": dev, "batch_size": b, "skipped": self.skipped.get((dev, b)),
                       "speedup": self.ratios.speedup.get((dev, b)),
                       "peak_mem_bytes": self.peak_mem_bytes.get((dev, b)),
                       **(self.latency[(dev, b)].to_dict() if (dev, b) in self.latency else {})}
                      for dev, b in keys]
        return d


@dataclass
class BenchResult:
    """What :func:`bench` returns; :mod:`mhsa_cli.report.bench` renders it."""

    rows: list[BenchRow]
    baseline: str  # name of the baseline row
    devices: list[str]
    batch_sizes: list[int]
    environment: dict[str, Any]
    config: dict[str, Any]
    task: dict[str, Any]  # task summary (name, split sizes)
    timing_input: str  # how the timing batch was made
    files: list[str] = field(default_factory=list)  # written to --out

    @property
    def keys(self) -> list[Key]:
        """(device, batch size) cells in table order."""
        return [(d, b) for d in self.devices for b in self.batch_sizes]

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "devices": self.devices, "batch_sizes": self.batch_sizes,
                "task": self.task, "timing_input": self.timing_input, "config": self.config,
                "environment": self.environment, "rows": [r.to_dict() for r in self.rows]}


@dataclass
class _Entry:
    """A loaded checkpoint and its model, before measuring."""

    ckpt: Any
    model: nn.Module
    name: str


def _check_inputs(cfg: Any) -> tuple[list[str], list[int]]:
    """Validate devices and batch sizes; return them de-duplicated, in order."""
    from .errors import choice

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

    from .checkpoint import load_checkpoint

    ordered = list(paths)
    base_path = Path(baseline or paths[0]).resolve()
    if all(Path(p).resolve() != base_path for p in paths):
        ordered.insert(0, str(baseline))
    unique: dict[Path, str] = {}
    for p in ordered:
        unique.setdefault(Path(p).resolve(), p)
    ckpts = [load_checkpoint(p) for p in unique.values()]
    base = next(c for c in ckpts if c.path.resolve() == base_path)
    return ckpts, base


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


def _load_model(ckpt: Any) -> nn.Module:
    from .checkpoint import load_model

    try:
        return load_model(ckpt)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith("quantize"):
            raise MhsaError(f"cannot load int8 checkpoint {ckpt.path}: mhsa_cli.quantize is not installed") from None
        raise


def timing_input(data: Any, batch_size: int, seq_len: int | None = None, seed: int = 0) -> torch.Tensor:
    """A real-shaped timing batch: seeded validation rows (repeated if too few), full length.

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
    return x[rows][:, : seq_len or x.shape[1]].contiguous()


def _measure_rows(entries: list[_Entry], data: Any, progress: Progress) -> list[BenchRow]:
    """Accuracy (CPU, test split), sizes and parameter counts of every model."""
    from .checkpoint import size_on_disk
    from .train import evaluate

    rows = []
    with progress.task("accuracy (test split)", total=len(entries)) as bar:
        for e in entries:
            stored = e.ckpt.meta.get("metrics", {}).get("test_acc")
            rows.append(BenchRow(
                name=e.name, path=str(e.ckpt.path), kind=_display_kind(e.ckpt),
                heads=list(e.ckpt.model_config.heads), params=count_weights(e.model),
                size_bytes=size_on_disk(e.ckpt.path), weight_bytes=weight_bytes(e.model),
                test_acc=evaluate(e.model, data.test, "cpu"),
                stored_test_acc=float(stored) if isinstance(stored, (int, float)) else None,
                quantized_engine=(getattr(e.model, "quantization", None) or {}).get("engine")))
            bar.advance(1)
    return rows


def _time_cell(entries: list[_Entry], rows: list[BenchRow], key: Key, x: torch.Tensor,
               cfg: Any, progress: Progress) -> None:
    """Time every applicable model on one (device, batch size), interleaved."""
    device = torch.device(key[0])
    group = {}
    for e, row in zip(entries, rows):
        if device.type == "cuda" and e.ckpt.kind == "int8":
            row.skipped[key] = CPU_ONLY  # dynamic int8 kernels exist for CPU only
        else:
            group[e.name] = (e.model, x)
    peaks: dict[str, int | None] = {n: None for n in group}
    if device.type == "cuda" and group:
        peaks = _cuda_peaks(group, device)
    stats = measure_interleaved(group, device, cfg.min_time, cfg.min_repeats, cfg.warmup,
                                progress, desc=f"timing {key[0]} · batch {key[1]}")
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


def _fill_ratios(rows: list[BenchRow], base: BenchRow) -> None:
    for r in rows:
        r.ratios.compression = base.size_bytes / r.size_bytes if r.size_bytes else None
        r.ratios.acc_delta_pts = 100.0 * (r.test_acc - base.test_acc)
        for key, st in r.latency.items():
            b = base.latency.get(key)
            r.ratios.speedup[key] = b.latency_ms_p50 / st.latency_ms_p50 if b and st.latency_ms_p50 > 0 else None


def _bench_environment(devices: list[str]) -> dict[str, Any]:
    from .environment import environment

    env = environment()
    env["torch_interop_threads"] = torch.get_num_interop_threads()
    env["clock"] = {"cpu": "time.perf_counter per call",
                    "cuda": "torch.cuda.Event pairs, synchronized"}
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
            different tasks, batch size <= 0, unknown device, CUDA asked for but
            absent, or an existing non-empty ``--out`` without ``--force``.
    """
    from .checkpoint import check_output_dir
    from .config import to_dict
    from .environment import set_threads
    from .tasks import task_from_spec

    devices, sizes = _check_inputs(cfg)
    if cfg.out:
        check_output_dir(cfg.out, cfg.force)
    ckpts, base_ckpt = _load_all(list(cfg.checkpoints), cfg.baseline)
    data = task_from_spec(_check_same_task(ckpts))
    entries = [_Entry(c, _load_model(c), n) for c, n in zip(ckpts, _names(ckpts))]
    threads_before = torch.get_num_threads()
    try:
        set_threads(cfg.threads)
        env = _bench_environment(devices)
        rows = _measure_rows(entries, data, progress)
        for key in [(d, b) for d in devices for b in sizes]:
            _time_cell(entries, rows, key, timing_input(data, key[1], cfg.seq_len, cfg.seed), cfg, progress)
    finally:
        torch.set_num_threads(threads_before)
        for e in entries:
            e.model.to("cpu")
    base = next(r for r, e in zip(rows, entries) if e.ckpt is base_ckpt)
    base.is_baseline = True
    _fill_ratios(rows, base)
    seq = cfg.seq_len or data.max_len
    result = BenchResult(rows, base.name, devices, sizes, env, to_dict(cfg), data.summary(),
                         f"{seq}-token rows of the validation split (seed {cfg.seed}), same tensor for all models")
    if cfg.out:
        from .report.bench import write_bench_files

        result.files = [str(p) for p in write_bench_files(result, cfg.out)]
    return result
