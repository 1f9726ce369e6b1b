"""Budget mode's FLOPs fraction, and ``--target-latency L`` chosen by measurement.

``--target-flops F`` is the fraction itself. ``--target-latency L`` finds one by
bisection (:func:`bisect_fraction`): each round prunes a copy of the input model to
a FLOPs fraction ``f`` with the budget rule (:mod:`.budget`, scores computed once),
measures the copy's latency against the input's in ``--budget-runtime`` at
``--budget-threads`` threads, batch ``--budget-batch`` and ``--budget-seq-len``
(:func:`mhsa_cli.bench.timer.measure_interleaved`, ``--budget-time`` seconds per model;
ORT int8: each model exported with :func:`mhsa_cli.export.write_export`), and moves
``f`` up when the copy is faster than asked, down when slower. The round closest to
``L`` wins. After pruning, the final model is measured once more: ``pruning.json``
records the predicted ratio (FLOPs), the search's and the final measured one.

:data:`MEASURES` maps a runtime name to ``(cfg, original, tmp) -> (candidate -> ratio)``;
tests replace an entry to make the search deterministic.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

from ..config import PruneConfig
from ..model import MHSAClassifier, ModelConfig, attention_flops
from ..progress import Progress
from ..tasks import TaskData
from .budget import RULE, apply_plan, floor_flops, greedy_plan, priorities, score_units
from .plan import Origin

Ratio = Callable[[MHSAClassifier], float]  # candidate -> its latency / the original's
TOLERANCE = 0.02  # the search stops early when a round lands this close (relative) to the target


def budget_input(config: ModelConfig, batch: int, seq_len: int | None) -> torch.Tensor:
    """A full-length timing batch (no padding: FLOPs are counted at full length), seeded."""
    gen, T = torch.Generator().manual_seed(0), seq_len or config.max_len
    if config.input_kind == "features":
        return torch.randn(batch, T, config.feature_dim, generator=gen)  # (B, T, F)
    x = torch.randint(1, config.vocab_size, (batch, T), generator=gen)  # (B, T)
    return x.masked_fill(x == config.pad_id, 1 if config.pad_id != 1 else 2)


def _timed(cfg: PruneConfig, calls: dict[str, Any], x: torch.Tensor) -> float:
    """p50 latency of ``candidate`` / ``original`` (interleaved, ``cfg.budget_threads`` torch threads)."""
    from ..bench.timer import measure_interleaved

    before = torch.get_num_threads()
    torch.set_num_threads(cfg.budget_threads)
    try:
        stats = measure_interleaved({k: (c, x) for k, c in calls.items()}, min_time=cfg.budget_time,
                                    min_repeats=5, warmup=2)
    finally:
        torch.set_num_threads(before)
    return stats["candidate"].latency_ms_p50 / stats["original"].latency_ms_p50


def _torch_measure(cfg: PruneConfig, original: MHSAClassifier, tmp: Path) -> Ratio:
    """Eager torch on the CPU; models copied so timing never moves the ones being pruned."""
    x, base = budget_input(original.config, cfg.budget_batch, cfg.budget_seq_len), copy.deepcopy(original).cpu()
    return lambda cand: _timed(cfg, {"original": base, "candidate": copy.deepcopy(cand).cpu()}, x)


def _ort_int8(model: MHSAClassifier, folder: Path, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` exported (fp32 + dynamic int8) into ``folder`` and loaded in ORT int8."""
    from ..bench.entries import _write_meta
    from ..export import write_export
    from ..runtimes import load_runtime

    folder.mkdir(parents=True)
    model = copy.deepcopy(model).cpu().eval()
    exporter, _ = write_export(model, folder, int8=True)
    ckpt = SimpleNamespace(model_config=model.config, meta={"model": model.config.to_dict()}, task_spec={},
                           path=folder)
    _write_meta(folder, ckpt, exporter)
    return load_runtime("onnxruntime", folder, "int8", threads).call


def _ort_measure(cfg: PruneConfig, original: MHSAClassifier, tmp: Path) -> Ratio:
    """ONNX Runtime dynamic int8 at ``cfg.budget_threads`` intra-op threads (the original exported once)."""
    x = budget_input(original.config, cfg.budget_batch, cfg.budget_seq_len)
    base, n = _ort_int8(original, tmp / "original", cfg.budget_threads), iter(range(1_000_000))
    return lambda cand: _timed(cfg, {"original": base, "candidate": _ort_int8(cand, tmp / f"c{next(n)}",
                                                                              cfg.budget_threads)}, x)


MEASURES: dict[str, Callable[[PruneConfig, MHSAClassifier, Path], Ratio]] = {
    "torch": _torch_measure, "onnxruntime-int8": _ort_measure}


@dataclass
class Search:
    """The FLOPs fraction budget steps aim at, and how it was found."""

    fraction: float
    rounds: list[dict[str, float]] = field(default_factory=list)  # flops_target, flops_ratio, latency_ratio
    measure: Ratio | None = None  # target_latency: measures the final model
    tmp: Any = None  # the export folders' TemporaryDirectory (removed with this object)


def bisect_fraction(target: float, lo: float, ratio_at: Callable[[float], tuple[float, float]],
                    rounds: int) -> tuple[float, list[dict[str, float]]]:
    """Bisection of the FLOPs fraction ``f`` in ``(lo, 1)`` so that the latency ratio meets ``target``.

    Args:
        target: the latency ratio asked for.
        lo: the lowest reachable FLOPs fraction.
        ratio_at: ``f -> (FLOPs ratio, latency ratio)`` of the model pruned to ``f``.
        rounds: at most this many measurements (fewer when one lands within :data:`TOLERANCE`).

    Returns:
        (the fraction of the round closest to ``target``, every round's record).

    Example:
        >>> bisect_fraction(0.5, 0.0, lambda f: (f, 0.2 + 0.8 * f), 8)[0]  # doctest: +ELLIPSIS
        0.37...
    """
    hi, f, log = 1.0, target, []
    for _ in range(rounds):
        flops_ratio, latency_ratio = ratio_at(f)
        log.append({"flops_target": f, "flops_ratio": flops_ratio, "latency_ratio": latency_ratio})
        if abs(latency_ratio / target - 1.0) <= TOLERANCE:
            break
        hi, lo = (f, lo) if latency_ratio > target else (hi, f)
        f = (lo + hi) / 2
    best = min(log, key=lambda r: (abs(r["latency_ratio"] / target - 1.0), r["latency_ratio"] > target))
    return best["flops_target"], log


def _candidate(cfg: PruneConfig, model: MHSAClassifier, units: list[Any], fraction: float) -> MHSAClassifier:
    """A copy of ``model`` pruned to ``fraction`` of its FLOPs by the budget rule (no fine-tuning)."""
    full = attention_flops(model.config, cfg.budget_seq_len)
    plan = greedy_plan(model.config, units, fraction * full, cfg.budget_seq_len, cfg.min_heads_per_layer)
    return apply_plan(model, plan, Origin.of(model), {})


def choose_fraction(cfg: PruneConfig, model: MHSAClassifier, data: TaskData | None,
                    progress: Progress) -> Search:
    """The FLOPs fraction of ``--target-flops``, or the one bisection finds for ``--target-latency``."""
    if cfg.target_latency is None:
        return Search(cfg.target_flops)
    tmp = tempfile.TemporaryDirectory(prefix="mhsa-budget-")
    measure = MEASURES[cfg.budget_runtime](cfg, model, Path(tmp.name))
    flat = score_units(cfg, model, data, cfg.seed)[0]
    units = priorities(model.config, flat, cfg.budget_seq_len)
    full = attention_flops(model.config, cfg.budget_seq_len)

    def ratio_at(f: float) -> tuple[float, float]:
        cand = _candidate(cfg, model, units, f)
        ratio = measure(cand)
        progress.log(f"budget: FLOPs target {f:.3f} -> latency ratio {ratio:.3f} ({cfg.budget_runtime})")
        return attention_flops(cand.config, cfg.budget_seq_len) / full, ratio

    lo = floor_flops(model.config, cfg.budget_seq_len, cfg.min_heads_per_layer) / full
    fraction, rounds = bisect_fraction(cfg.target_latency, lo, ratio_at, cfg.budget_rounds)
    return Search(fraction, rounds, measure, tmp)


def _lost(original: MHSAClassifier, model: MHSAClassifier) -> dict[str, dict[str, int | float]]:
    """Per kind: how many units went and what fraction of the original's."""
    pairs = {"layers": (len(original.blocks), len(model.blocks)), "heads": (sum(original.heads), sum(model.heads)),
             "neurons": (sum(original.ff_sizes), sum(model.ff_sizes))}
    return {k: {"removed": a - b, "fraction": (a - b) / a if a else 0.0} for k, (a, b) in pairs.items()}


def budget_doc(cfg: PruneConfig, search: Search, original: MHSAClassifier, model: MHSAClassifier,
               progress: Progress) -> dict[str, Any]:
    """What ``pruning.json`` (``budget``) and the report hold: rule, targets, FLOPs and latency ratios, losses."""
    seq = cfg.budget_seq_len or original.config.max_len
    flops_ratio = attention_flops(model.config, seq) / attention_flops(original.config, seq)
    doc: dict[str, Any] = {"rule": RULE, "target_flops": cfg.target_flops, "target_latency": cfg.target_latency,
                           "seq_len": seq, "flops_fraction": search.fraction, "flops_ratio": flops_ratio,
                           "lost": _lost(original, model)}
    if search.measure is not None:
        measured = search.measure(model)
        progress.log(f"budget: final model latency ratio {measured:.3f} (asked {cfg.target_latency})")
        doc["latency"] = {"runtime": cfg.budget_runtime, "threads": cfg.budget_threads, "batch": cfg.budget_batch,
                          "seconds_per_model": cfg.budget_time, "predicted_ratio": flops_ratio,
                          "search_ratio": min(search.rounds, key=lambda r: abs(r["flops_target"] - search.fraction))
                          ["latency_ratio"], "measured_ratio": measured, "rounds": search.rounds}
        search.tmp.cleanup()
    return doc
