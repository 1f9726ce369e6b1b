"""Measurement only: accuracy, size, latency and memory of checkpoints.

* :mod:`.timer` -- where latency is measured: :func:`measure_latency`,
  :func:`measure_interleaved` (round-robin in bursts), :class:`LatencyStats`.
* :mod:`.entries` -- one :class:`Entry` per (checkpoint, runtime, precision):
  torch rows, and ORT fp32 / int8 rows of float checkpoints (exported to a temporary folder).
* :mod:`.sizes` -- weight bytes in memory, weight counts, CUDA peak memory.
* :mod:`.command` -- :func:`bench` (``mhsa bench``) and the timing batch (:func:`timing_input`).
* :mod:`.result` -- what it returns: :class:`BenchResult` / :class:`BenchRow` (JSON both ways).

Everything public is importable from here (``from mhsa_cli.bench import X``).
"""

from __future__ import annotations

from .command import bench, timing_input
from .result import CPU_ONLY, KIND_BY_OPERATION, BenchResult, BenchRow, Key, Ratios
from .sizes import count_weights, cuda_peak_memory_bytes, weight_bytes
from .timer import (CpuClock, CudaClock, LatencyStats, make_clock, measure_interleaved, measure_latency,
                    percentile, summarize)

__all__ = [
    "CPU_ONLY", "KIND_BY_OPERATION", "BenchResult", "BenchRow", "CpuClock", "CudaClock", "Key",
    "LatencyStats", "Ratios", "bench", "count_weights", "cuda_peak_memory_bytes", "make_clock",
    "measure_interleaved", "measure_latency", "percentile", "summarize", "timing_input", "weight_bytes",
]
