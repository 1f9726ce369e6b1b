"""What bench times: one entry per (checkpoint, runtime, precision).

``torch`` gives every checkpoint its own row (float or torch-int8). With
``onnxruntime``, each float checkpoint is exported to a temporary folder
(:func:`mhsa_cli.export.write_export`: the same files ``mhsa export`` writes)
and gets an ORT fp32 and an ORT int8 row; torch-int8 checkpoints have no ONNX
form (their float parent's ORT int8 row is the counterpart), which a note says.
ORT sessions get torch's thread count (:mod:`mhsa_cli.runtimes.onnxruntime`),
or each of ``--ort-threads`` (one row per count, labelled "N thr" where it is
not torch's single count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

TORCH, ORT = "torch", "onnxruntime"
RUNTIME_LABELS = {TORCH: "torch", ORT: "ORT"}
PARITY_ROWS = 256  # validation rows of the ORT fp32 vs torch check


@dataclass
class Entry:
    """A model ready to time: the checkpoint it comes from and how it runs."""

    ckpt: Any
    model: Any  # nn.Module (torch) or a runtime's x -> logits callable
    name: str  # row name (unique in the bench)
    model_name: str  # the checkpoint's display name (rows of one checkpoint share it)
    runtime: str = TORCH
    precision: str = "fp32"
    folder: Path | None = None  # ORT: the export folder
    details: dict[str, Any] = field(default_factory=dict)
    variant: str = ""  # a setting beside runtime and precision ("1 thr"), "" when the default

    @property
    def label(self) -> str:
        """``torch fp32``, ``ORT int8``, ``ORT int8 1 thr``, ..."""
        return runtime_label(self.runtime, self.precision, self.variant)


def runtime_label(runtime: str, precision: str, variant: str = "") -> str:
    """What the runtime column shows: ``ORT int8``, ``ORT int8 1 thr``."""
    return " ".join(x for x in (RUNTIME_LABELS.get(runtime, runtime), precision, variant) if x)


def checkpoint_entry(ckpt: Any, name: str, runtime: str = TORCH) -> Entry:
    """An entry of a runtime that reads checkpoint folders as they are (``torch``: the row named
    after the checkpoint; another runtime's row gets its label in brackets)."""
    from ..runtimes import load_runtime

    loaded = load_runtime(runtime, ckpt.path)
    row = name if runtime == TORCH else f"{name} ({runtime_label(runtime, loaded.precision)})"
    return Entry(ckpt, loaded.call, row, name, runtime, loaded.precision, details=dict(loaded.details))


def export_entries(ckpt: Any, name: str, tmp: Path, threads: int, ort_threads: list[int] | None = None,
                   runtime: str = ORT, int8_methods: tuple[str, ...] = ("dynamic",),
                   calibration: list[Any] | None = None, per_channel: bool = False) -> list[Entry]:
    """Entries of a runtime that reads export folders: the float checkpoint exported into
    ``tmp/<n>`` (the files ``mhsa export`` writes; one int8 file per ``int8_methods``, static
    calibrated on ``calibration``; ``per_channel``: per-channel weight scales), one entry per precision
    the folder offers and intra-op thread count (``ort_threads``, default ``[threads]``)."""
    from ..checkpoint import load_model
    from ..export import write_export
    from ..runtimes import get_runtime, load_runtime

    folder = tmp / f"{len(list(tmp.iterdir()))}"
    folder.mkdir()
    exporter, quant = write_export(load_model(ckpt), folder, int8=True, per_channel=per_channel,
                                   int8_methods=int8_methods, calibration=calibration)
    _write_meta(folder, ckpt, exporter)
    counts = ort_thread_counts(threads, ort_threads)
    out = []
    for n in counts:
        variant = "" if counts == [threads] else f"{n} thr"
        for precision in get_runtime(runtime).precisions(folder):
            loaded = load_runtime(runtime, folder, precision, n)
            label = ", ".join(x for x in (runtime_label(runtime, precision), variant) if x)
            out.append(Entry(ckpt, loaded.call, f"{name} ({label})", name, runtime, precision, folder,
                             {**loaded.details, "exporter": exporter,
                              "quantization": quant.get(precision)}, variant))
    return out


def ort_thread_counts(threads: int, ort_threads: list[int] | None) -> list[int]:
    """The intra-op thread counts ORT rows get: ``ort_threads`` without repeats, else torch's
    ``threads``; ``== [threads]`` means the default (rows unlabelled, one count recorded)."""
    return list(dict.fromkeys(ort_threads or [threads]))


def _write_meta(folder: Path, ckpt: Any, exporter: dict[str, Any] | None = None) -> None:
    """A minimal export.json so the ORT runtime loads the temporary folder like any export (with the
    exporter's settings, so its onnxruntime version guard sees fused attention as for any export)."""
    from ..checkpoint import _write_json
    from ..runtimes.folder import DTYPES, FILES, FORMAT, INPUT_NAME, META, VERSION, file_sha256

    kind = ckpt.model_config.input_kind
    _write_json(folder / META, {
        "format": FORMAT, "version": VERSION, "model": ckpt.meta["model"], "task": ckpt.task_spec,
        "input": {"name": INPUT_NAME, "kind": kind, "dtype": DTYPES[kind]},
        "files": {p: {"file": f, "sha256": file_sha256(folder / f)} for p, f in FILES.items()
                  if (folder / f).is_file()},  # the int8 files asked for
        "exporter": exporter or {},
        "source": {"path": str(ckpt.path), "id": ckpt.meta.get("id")}, "temporary": "made by mhsa bench"})


def parity_gap(torch_model: Any, entry: Entry, x: torch.Tensor) -> float:
    """Max abs logit gap of an ORT entry vs the checkpoint's torch model on ``x`` (recorded, not
    bounded: an int8 row differs by design).

    Raises:
        ParityError: the entry's logits have another shape than torch's, or are not finite.
    """
    from ..runtimes.parity import logit_gap

    with torch.inference_mode():
        return logit_gap(torch_model(x), entry.model(x), f"bench row {entry.name} vs torch")


def onnx_sizes(entry: Entry) -> tuple[int, int]:
    """(file bytes, initializer bytes) of an ORT entry's ONNX file."""
    import onnx
    from onnx import numpy_helper

    path = entry.folder / entry.details["file"]  # type: ignore[operator]
    graph = onnx.load(str(path)).graph
    return path.stat().st_size, sum(numpy_helper.to_array(t).nbytes for t in graph.initializer)


def build_entries(ckpts: list[Any], names: list[str], runtimes: list[str], tmp: Path | None,
                  threads: int, ort_threads: list[int] | None = None, int8_methods: tuple[str, ...] = ("dynamic",),
                  calibration: list[Any] | None = None, per_channel: bool = False) -> tuple[list[Entry], list[str]]:
    """Entries in table order (each checkpoint's runtimes together, in registry order) and notes on
    what was left out (``int8_methods``, ``calibration``: see :func:`export_entries`)."""
    from ..runtimes import RUNTIMES

    entries, notes = [], []
    chosen = [r for r in RUNTIMES if r in runtimes]
    for ckpt, name in zip(ckpts, names):
        for runtime in chosen:
            if RUNTIMES[runtime].reads == "checkpoint":
                entries.append(checkpoint_entry(ckpt, name, runtime))
            elif ckpt.kind != "float":
                notes.append(f"{name}: a torch-{ckpt.kind} checkpoint has no ONNX export: not run in "
                             f"{RUNTIME_LABELS.get(runtime, runtime)} (its float parent's int8 row is the "
                             "counterpart).")
            else:
                entries.extend(export_entries(ckpt, name, tmp, threads, ort_threads, runtime,  # type: ignore[arg-type]
                                              int8_methods, calibration, per_channel))
    return entries, notes


def check_runtimes(names: list[str]) -> list[str]:
    """Validate runtime names; return them de-duplicated, in order."""
    from ..errors import MhsaError, choice
    from ..runtimes import runtime_names

    runtimes = [choice("runtime", str(r), runtime_names()) for r in dict.fromkeys(names)]
    if not runtimes:
        raise MhsaError(f"no runtimes given; choose from: {', '.join(runtime_names())}")
    return runtimes


def fastest_rows(rows: list[Any], keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """For each checkpoint with rows in several runtimes/precisions and each cell: the fastest (p50)."""
    out = []
    for model in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == model]
        for key in keys if len(mine) > 1 else []:
            timed = [r for r in mine if key in r.latency]
            if not timed:
                continue
            best = min(timed, key=lambda r: r.latency[key].latency_ms_p50)
            out.append({"model": model, "device": key[0], "batch_size": key[1], "row": best.name,
                        "runtime": best.runtime, "precision": best.precision, "label": best.runtime_label,
                        "latency_ms_p50": best.latency[key].latency_ms_p50})
    return out
