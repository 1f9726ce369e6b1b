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


def torch_entry(ckpt: Any, name: str) -> Entry:
    from ..checkpoint import load_model

    return Entry(ckpt, load_model(ckpt), name, name, TORCH, "int8" if ckpt.kind == "int8" else "fp32")


def ort_entries(ckpt: Any, name: str, tmp: Path, threads: int, ort_threads: list[int] | None = None) -> list[Entry]:
    """ORT fp32 and int8 entries of a float checkpoint, exported into ``tmp/<name>``: one pair per
    intra-op thread count (``ort_threads``, default ``[threads]``)."""
    from ..checkpoint import load_model
    from ..export import write_export
    from ..runtimes import load_runtime

    folder = tmp / f"{len(list(tmp.iterdir()))}"
    folder.mkdir()
    model = load_model(ckpt)
    exporter, quant = write_export(model, folder, int8=True)
    _write_meta(folder, ckpt)
    counts = ort_thread_counts(threads, ort_threads)
    out = []
    for n in counts:
        variant = "" if counts == [threads] else f"{n} thr"
        for precision in ("fp32", "int8"):
            loaded = load_runtime(ORT, folder, precision, n)
            label = ", ".join(x for x in (f"ORT {precision}", variant) if x)
            out.append(Entry(ckpt, loaded.call, f"{name} ({label})", name, ORT, precision, folder,
                             {**loaded.details, "exporter": exporter,
                              "quantization": quant if precision == "int8" else None}, variant))
    return out


def ort_thread_counts(threads: int, ort_threads: list[int] | None) -> list[int]:
    """The intra-op thread counts ORT rows get: ``ort_threads`` without repeats, else torch's
    ``threads``; ``== [threads]`` means the default (rows unlabelled, one count recorded)."""
    return list(dict.fromkeys(ort_threads or [threads]))


def _write_meta(folder: Path, ckpt: Any) -> None:
    """A minimal export.json so the ORT runtime loads the temporary folder like any export."""
    from ..checkpoint import _write_json
    from ..runtimes.folder import DTYPES, FILES, FORMAT, INPUT_NAME, META, VERSION, file_sha256

    kind = ckpt.model_config.input_kind
    _write_json(folder / META, {
        "format": FORMAT, "version": VERSION, "model": ckpt.meta["model"], "task": ckpt.task_spec,
        "input": {"name": INPUT_NAME, "kind": kind, "dtype": DTYPES[kind]},
        "files": {p: {"file": f, "sha256": file_sha256(folder / f)} for p, f in FILES.items()},
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
                  threads: int, ort_threads: list[int] | None = None) -> tuple[list[Entry], list[str]]:
    """Entries in table order (each checkpoint's runtimes together) and notes on what was left out."""
    entries, notes = [], []
    for ckpt, name in zip(ckpts, names):
        if TORCH in runtimes:
            entries.append(torch_entry(ckpt, name))
        if ORT in runtimes:
            if ckpt.kind != "float":
                notes.append(f"{name}: a torch-{ckpt.kind} checkpoint has no ONNX export: not run in ORT "
                             "(its float parent's ORT int8 row is the counterpart).")
                continue
            entries.extend(ort_entries(ckpt, name, tmp, threads, ort_threads))  # type: ignore[arg-type]
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
