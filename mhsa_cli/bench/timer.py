"""Where latency is measured: the one timer of the project.

:func:`measure_latency` and :func:`measure_interleaved` are reused by prune /
quantize / distill and by ``mhsa bench``. Method:

* eval mode + ``torch.inference_mode``; ``warmup`` untimed rounds first, kept
  going until they also fill :data:`WARMUP_FRACTION` of ``min_time`` (a handful
  of sub-millisecond calls does not wake the CPU's clocks, caches and thread
  pool: the first model timed in a run measured 6-9 % slower without this);
* every call is timed on its own (``time.perf_counter`` on CPU; on CUDA a pair
  of ``torch.cuda.Event(enable_timing=True)`` after a ``synchronize``), so the
  result is a distribution: p50 / p90 / mean / min / std in milliseconds
  (:class:`LatencyStats`, made by :func:`summarize` with :func:`percentile`);
* repeats continue until a model has both ``min_time`` seconds of timed calls
  and ``min_repeats`` calls;
* several models are timed **round-robin in bursts** (A A A, B, C C, A A A,
  ...) so slow drift of the machine (frequency scaling, other load) hits all of
  them alike: per round each model runs back to back for about
  :data:`BURST_MS` (at least one call; the burst size comes from the warm-up),
  after one untimed call that brings back its caches. Timed
  one call per model per round, the other models evict a small model's weights
  and caches before every call: measured on the quickstart, the ORT int8
  student (0.030 ms warm) took 0.104 ms among 14 models, the torch baseline
  1.1-1.5 ms instead of 0.62, a state no server of one model is in and one that
  ``torch.utils.benchmark.Timer`` (repeated calls) does not measure either. The
  lead call costs time: one extra call per model and round (for a model slower
  than :data:`BURST_MS`, twice the calls).
  Without warm-up (``warmup=0``) or with ``burst_ms=0`` every burst is one call;
* Python's garbage collector is paused while timing (as ``timeit`` does).
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

from ..errors import MhsaError
from ..progress import NULL, Progress

WARMUP_FRACTION = 0.1  # warm-up lasts at least this share of min_time (when warmup > 0)
BURST_MS = 10.0  # per round, each model runs back to back about this long (see the module docstring)
MAX_BURST = 256  # timed calls per burst at most

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
    burst: int = 1  # timed calls per round (samples_ms[i * burst:(i + 1) * burst] is round i)

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-able (``samples_ms`` included)."""
        return asdict(self)

    def per_round_ms(self) -> list[float]:
        """The median of each round's burst: entry i is round i for every model of one
        :func:`measure_interleaved` run (bursts differ in size; rounds do not)."""
        b = max(1, self.burst)
        return [percentile(self.samples_ms[i:i + b], 50) for i in range(0, len(self.samples_ms), b)]


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


def summarize(samples_ms: list[float], batch_size: int = 1, burst: int = 1) -> LatencyStats:
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
        burst=burst,
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
        # the events go on the timed device's current stream, not on the current device's (which
        # may be another GPU: its events would time nothing of this call)
        stream = torch.cuda.current_stream(self.device)
        torch.cuda.synchronize(self.device)
        self.start.record(stream)
        call()
        self.end.record(stream)
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
    """Move an nn.Module (in place) and a tensor input to ``device``; return the call: the
    model's own ``timed_call(x)`` where it has one (ONNX Runtime: numpy in once, numpy out,
    no per-call torch wrapping), else ``model(x)``."""
    if isinstance(model, nn.Module):
        model.to(device)
    if isinstance(x, torch.Tensor):
        x = x.to(device)
    timed = getattr(model, "timed_call", None)
    return timed(x) if timed is not None else (lambda: model(x))


def _batch_size(x: Any) -> int:
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1


def _fraction_done(total_ms: Mapping[str, float], calls: Mapping[str, int], min_time: float,
                   min_repeats: int) -> float:
    """How far the slowest-to-finish model is: min over models of its time and count fractions.

    ``total_ms`` is each model's running sum of timed calls and ``calls`` their number (kept
    by the caller, so the check costs O(models) per round, not O(samples)).
    """
    if min_time <= 0:
        return min((calls[n] / min_repeats for n in total_ms), default=1.0)
    return min((min(t / 1e3 / min_time, calls[n] / min_repeats) for n, t in total_ms.items()), default=1.0)


def _check_settings(min_time: float, min_repeats: int, warmup: int) -> None:
    if min_time < 0 or min_repeats < 1 or warmup < 0:
        raise MhsaError(f"timing needs min_time >= 0, min_repeats >= 1 and warmup >= 0 "
                        f"(got {min_time}, {min_repeats}, {warmup})")


def _warm_up(calls: Mapping[str, Callable[[], Any]], rounds: int, min_seconds: float,
             clock: CpuClock | CudaClock | None = None) -> dict[str, float]:
    """``rounds`` untimed rounds of every call, more until ``min_seconds`` passed (rounds > 0).

    With a ``clock`` each model makes two calls back to back per round, the second timed:
    returns each model's fastest warm call (ms), which sizes its bursts; else {}."""
    t0, done, best = time.perf_counter(), 0, {}
    while rounds > 0 and (done < rounds or time.perf_counter() - t0 < min_seconds):
        for name, call in calls.items():
            call()
            if clock is not None:
                best[name] = min(best.get(name, math.inf), clock.time_ms(call))
        done += 1
    return best


def burst_sizes(warm_ms: Mapping[str, float], burst_ms: float, min_repeats: int = MAX_BURST,
                min_time: float = 0.0) -> dict[str, int]:
    """Timed calls per round: as many as fill ``burst_ms`` at the warm speed, at least 1, at most
    MAX_BURST and at most what the model needs in all (``min_repeats``, or ``min_time`` s of calls
    at the warm speed if more), so short runs stay short.

    Capped at ``min_repeats`` alone (20 in ``mhsa bench``), a 0.04 ms model's bursts were 20
    calls, 0.8 ms: inside the spin-wait of the previous torch model's OpenMP threads, which took
    the core ORT's second thread needed (quickstart, 2 threads, batch 1: ORT int8 student 0.049-
    0.054 ms in 20-call bursts, 0.039-0.043 ms in 250-call bursts; 0.040 ms alone)."""
    out = {}
    for n, t in warm_ms.items():
        t = max(t, 1e-6)
        need = max(min_repeats, math.ceil(min_time * 1e3 / t))
        out[n] = max(1, min(MAX_BURST, need, int(burst_ms / t)))
    return out


def measure_interleaved(models: Mapping[str, tuple[Any, Any]], device: torch.device | str = "cpu",
                        min_time: float = 1.0, min_repeats: int = 20, warmup: int = 5,
                        progress: Progress = NULL, desc: str = "timing",
                        burst_ms: float = BURST_MS) -> dict[str, LatencyStats]:
    """Time several models round-robin in bursts: A's calls, B's, ..., repeated.

    Rounds continue until **every** model has at least ``min_time`` seconds of
    timed calls and at least ``min_repeats`` calls; machine drift affects them
    alike. Per round each model makes the calls its warm-up speed fits in
    ``burst_ms`` (see :func:`burst_sizes`), after one untimed call.

    Args:
        models: name -> (model, input). Models are called as ``model(x)``;
            nn.Modules are moved to ``device`` in place and put in eval mode
            (their train/eval mode is restored afterwards); tensors are copied
            to ``device``.
        device: "cpu" or "cuda[:i]" (CUDA events + synchronize there).
        min_time: seconds of timed calls each model needs (>= 0).
        min_repeats: timed calls each model needs (>= 1).
        warmup: untimed rounds before timing (>= 0); when > 0, rounds continue
            until they also take ``WARMUP_FRACTION * min_time`` seconds.
        progress: one bar, complete when the stopping rule is met.
        desc: the bar's description.
        burst_ms: about how long each model runs per round (0: one call per round).

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
        bursts = burst_ms > 0 and warmup > 0  # else one timed call per model and round, no lead call
        warm = _warm_up(calls, warmup, WARMUP_FRACTION * min_time, clock if bursts else None)
        burst = burst_sizes(warm, burst_ms, min_repeats, min_time) if bursts else {name: 1 for name in calls}
        with progress.task(desc, total=100) as bar:
            total_ms = {name: 0.0 for name in calls}
            shown, done = 0, 0.0 if calls else 1.0
            while done < 1.0:
                for name, call in calls.items():
                    _burst(call, burst[name], bursts, clock, samples[name])
                    total_ms[name] += sum(samples[name][-burst[name]:])
                done = _fraction_done(total_ms, {n: len(v) for n, v in samples.items()}, min_time, min_repeats)
                now = int(100 * min(1.0, done))
                bar.advance(now - shown)
                shown = now
    return {name: summarize(samples[name], _batch_size(x), burst[name]) for name, (_, x) in models.items()}


def _burst(call: Callable[[], Any], n: int, lead: bool, clock: CpuClock | CudaClock, out: list[float]) -> None:
    """``n`` timed calls back to back (ms appended to ``out``), after one untimed ``lead`` call
    that brings back what the other models' calls evicted."""
    if lead:
        call()
    for _ in range(n):
        out.append(clock.time_ms(call))


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
