"""``mhsa quantize``: dynamic int8 quantization of a float checkpoint.

:func:`quantize` resolves the engine (:mod:`.engines`), quantizes every Linear
with the backend (:mod:`.backend`), compares float and int8 accuracy on the
validation and test splits and, in a quick check, their CPU latency (int8 is
slower than float on models whose matrices are small), saves an int8
checkpoint and returns a :class:`QuantizeResult` (sizes and counts from
:mod:`.measures`).

Only accuracy needs the checkpoint's data: without it (an import without
``--data``, a data file gone) the accuracy is left out with the reason
(:func:`mhsa_cli.tasks.task_or_reason`) and the latency check times rows built
from the checkpoint (:func:`mhsa_cli.model.probe_input`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import choice
from ..progress import NULL, Progress
from .backend import BACKENDS, linear_names
from .engines import quiet, resolve_engine, use_engine
from .measures import float_parts, fraction_of, model_weight_bytes, state_bytes, state_counts
from .rowwise import embedding_names


# --------------------------------------------------------------------------- mhsa quantize

@dataclass
class QuantizeResult:
    """What :func:`quantize` returns (the CLI renders it)."""

    out: str
    source: str
    backend: str
    engine: str  # the engine used (resolved from engine_requested)
    engine_requested: str
    per_channel: bool
    threads: int
    quantized_modules: list[str]  # Linear layers (dynamic int8)
    float_modules: list[dict[str, Any]]  # {"name", "type", "params"}
    params_int8: int
    params_float: int
    int8_fraction: float
    size_bytes_float: int  # weights file on disk
    size_bytes_int8: int
    weight_bytes_float: int  # in memory
    weight_bytes_int8: int
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> {"float", "int8"}
    latency: dict[int, dict[str, float]] = field(default_factory=dict)  # batch -> float_ms, int8_ms, ratio
    notes: list[str] = field(default_factory=list)  # e.g. accuracy not measured, and why
    quantized_embeddings: list[str] = field(default_factory=list)  # int8 tables (weight-only, per row)

    @property
    def size_ratio(self) -> float:
        return self.size_bytes_int8 / max(self.size_bytes_float, 1)


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Exact size of the weights file :func:`checkpoint.save_checkpoint` will write."""
    from safetensors.torch import save

    from ..checkpoint import FORMAT

    return len(save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": FORMAT}))


def _load_source(cfg: Any) -> Any:
    """Load the input checkpoint and check the output folder; refuse int8 inputs."""
    from ..checkpoint import check_output_dir, load_checkpoint

    ckpt = load_checkpoint(cfg.checkpoint)
    parent = (ckpt.meta.get("lineage") or [{}])[-1].get("parent")
    ckpt.require_kind("float", "quantize", "it is already quantized: quantize its float parent"
                      + (f" ({parent})" if parent else "") + " instead")
    check_output_dir(cfg.out, cfg.force, inputs=[cfg.checkpoint])
    return ckpt


def _accuracy(models: dict[str, nn.Module], data: Any, progress: Progress) -> dict[str, dict[str, float]]:
    """Validation and test accuracy of each model: {split: {model name: acc}}."""
    from ..train import evaluate

    acc: dict[str, dict[str, float]] = {"val": {}, "test": {}}
    with progress.task("accuracy float vs int8", total=len(models) * len(acc)) as bar, quiet():
        for split in acc:
            for name, model in models.items():
                acc[split][name] = evaluate(model, data.split(split))
                bar.advance(1)
    return acc


LATENCY_BATCHES = (1, 32)


def _timing_rows(data: Any, model: nn.Module, batch: int) -> torch.Tensor:
    """Real validation rows (:func:`mhsa_cli.bench.command.timing_input`), or without data rows
    built from the checkpoint (:func:`mhsa_cli.model.probe_input`)."""
    from ..bench.command import timing_input
    from ..model import probe_input

    return timing_input(data, batch) if data is not None else probe_input(model, batch=batch)


def _latency_check(models: dict[str, nn.Module], data: Any, seconds: float,
                   progress: Progress) -> dict[int, dict[str, float]]:
    """p50 latency (ms) of the float and int8 model, timed round-robin, at batch 1 and 32.

    A quick check with :func:`mhsa_cli.bench.measure_interleaved` on real
    validation rows (``data`` None: rows built from the checkpoint); ``mhsa bench``
    is the full measurement.
    """
    from ..bench.timer import measure_interleaved

    out = {}
    for b in LATENCY_BATCHES:
        x = _timing_rows(data, models["float"], b)
        with quiet():
            st = measure_interleaved({n: (m, x) for n, m in models.items()}, "cpu", min_time=seconds,
                                     min_repeats=5, warmup=2, progress=progress,
                                     desc=f"latency float vs int8, batch {b}")
        f_ms, q_ms = st["float"].latency_ms_p50, st["int8"].latency_ms_p50
        out[b] = {"float_ms": f_ms, "int8_ms": q_ms, "ratio": q_ms / f_ms}
    return out


def _metrics(acc: dict[str, dict[str, float]], counts: dict[str, int], fraction: float,
             tensors: dict[str, torch.Tensor], float_size: int, why: str | None) -> dict[str, Any]:
    """The int8 checkpoint's metrics: its accuracy (and the float one; without data the reason
    instead), parameters, sizes."""
    sizes = {"params": counts["int8"] + counts["float"], "int8_fraction": fraction,
             "size_bytes": _safetensors_bytes(tensors), "float_size_bytes": float_size}
    if not acc:
        return {**sizes, "accuracy_not_measured": why}
    return {"val_acc": acc["val"]["int8"], "test_acc": acc["test"]["int8"],
            "float_val_acc": acc["val"]["float"], "float_test_acc": acc["test"]["float"], **sizes}


def quantize(cfg: Any, progress: Progress = NULL) -> QuantizeResult:
    """``mhsa quantize``: dynamic int8 quantization of a float checkpoint.

    Args:
        cfg: a :class:`~mhsa_cli.config.QuantizeConfig`.
        progress: receives a bar for the accuracy evaluation.

    Returns:
        :class:`QuantizeResult`: engine, what is int8 and what stayed float,
        sizes on disk and in memory, validation/test accuracy float vs int8
        (empty without data, a note says why) and (unless ``latency_time`` is 0)
        p50 CPU latency at batch 1 and 32.

    Raises:
        MhsaError: unknown backend or engine, an engine this machine lacks, an
            int8 or corrupt input checkpoint, an existing output folder. Nothing
            is written then.

    Example:
        >>> quantize(build_config(QuantizeConfig, {"checkpoint": "runs/baseline", "out": "runs/int8"}))
    """
    from ..checkpoint import load_model, make_meta, save_checkpoint, size_on_disk
    from ..config import to_dict
    from ..environment import set_threads
    from ..tasks import task_or_reason

    backend = BACKENDS[choice("quantization backend", cfg.backend, BACKENDS)]
    engine = resolve_engine(cfg.engine)
    threads = set_threads(cfg.threads)
    ckpt = _load_source(cfg)
    float_model = load_model(ckpt)
    include = linear_names(float_model, cfg.classifier)
    tables = embedding_names(float_model) if cfg.embeddings else []
    qmodel = backend.quantize(float_model, engine, cfg.per_channel, include, tuple(tables)).eval()
    data, why = task_or_reason(ckpt.task_spec)
    acc = _accuracy({"float": float_model, "int8": qmodel}, data, progress) if data is not None else {}
    latency = (_latency_check({"float": float_model, "int8": qmodel}, data, cfg.latency_time, progress)
               if cfg.latency_time > 0 else {})
    tensors, kept = backend.state(qmodel), float_parts(qmodel)  # exported once, measured below
    counts, float_size = state_counts(tensors), size_on_disk(ckpt.path)
    fraction = fraction_of(counts)
    settings = {"backend": backend.name, "engine": engine, "engine_requested": cfg.engine,
                "per_channel": cfg.per_channel, "classifier": cfg.classifier, "dtype": "qint8",
                "modules": include, "embeddings": tables, "float_modules": [p["name"] for p in kept],
                "int8_fraction": fraction}
    metrics = _metrics(acc, counts, fraction, tensors, float_size, why)
    with use_engine(engine):  # so the recorded environment names the engine used
        meta = make_meta("int8", ckpt.model_config, ckpt.task_spec, "quantize",
                         {**to_dict(cfg), "engine_resolved": engine}, metrics,
                         parent=ckpt, extra={"quantization": settings, "latency_check": {
                             "threads": threads, "batches": {str(b): v for b, v in latency.items()},
                             "rows": "validation" if data is not None else "built from the checkpoint"}})
    save_checkpoint(cfg.out, tensors, meta, force=cfg.force)
    return QuantizeResult(
        out=str(cfg.out), source=str(ckpt.path), backend=backend.name, engine=engine,
        engine_requested=cfg.engine, per_channel=cfg.per_channel, threads=threads,
        quantized_modules=include, float_modules=kept, params_int8=counts["int8"],
        params_float=counts["float"], int8_fraction=fraction,
        size_bytes_float=float_size, size_bytes_int8=size_on_disk(cfg.out),
        weight_bytes_float=model_weight_bytes(float_model), weight_bytes_int8=state_bytes(tensors),
        accuracy=acc, latency=latency, notes=[] if data is not None else [f"accuracy not measured ({why})"],
        quantized_embeddings=tables)
