"""``mhsa export``: a float checkpoint -> a self-describing ONNX folder, checked.

:func:`export` writes ``model.onnx`` (fp32, :func:`.onnx.to_onnx`; q/k/v
projections one product per layer, attention one node, :mod:`.lean`), with
``--int8`` ``model.int8.onnx`` (:func:`.onnx.quantize_onnx`) and ``export.json``
(:mod:`mhsa_cli.runtimes.folder`) into a temporary folder, checks it and only
then renames it into place:

* parity: ORT fp32 logits vs torch on validation rows, at full length, at
  half length (the dynamic sequence axis) and for one row (the dynamic batch
  axis); shapes must match, every logit be finite and within ``--tolerance``
  (atol, 1e-4) + ``--rtol`` (1e-5) x its torch value (:mod:`mhsa_cli.runtimes.parity`);
* accuracy: test accuracy of the checkpoint in torch, of ORT fp32 and ORT int8;
* the int8 graph holds ``DynamicQuantizeLinear`` and ``MatMulInteger`` nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MhsaError
from ..progress import NULL, Progress
from ..runtimes.folder import DTYPES, FILES, FORMAT, INPUT_NAME, META, OUTPUT_NAME, VERSION, file_sha256
from .onnx import check_int8_graph, op_counts, optimized_op_counts, quantize_onnx, to_onnx

INT8_ACC_BUDGET_PTS = 0.5  # int8 losing more test accuracy than this gets a note


@dataclass
class ExportResult:
    """What :func:`export` returns (the CLI renders it); the same facts as export.json."""

    out: str
    source: str
    files: dict[str, dict[str, Any]]  # precision -> file, bytes, sha256, ops, optimized_ops
    parity: dict[str, Any]  # rows, max_abs_gap per check, tolerance
    accuracy: dict[str, float]  # checkpoint (torch), ort_fp32, ort_int8: test accuracy
    threads: int
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)


def _load_source(cfg: Any) -> Any:
    """The float checkpoint; an int8 one is refused naming its float parent."""
    from ..checkpoint import check_output_dir, load_checkpoint

    ckpt = load_checkpoint(cfg.checkpoint)
    if ckpt.kind != "float":
        parent = next((s.get("parent") for s in reversed(ckpt.meta.get("lineage") or [])
                       if s.get("operation") == "quantize"), None)
        raise MhsaError(f"cannot export {ckpt.path}: it is a torch-{ckpt.kind} checkpoint; export its float "
                        f"parent{f' ({parent})' if parent else ''} instead (--int8 makes ORT's own int8)")
    if Path(cfg.out).resolve() == ckpt.path.resolve():
        raise MhsaError(f"--out {cfg.out} is the input checkpoint; choose another folder")
    check_output_dir(cfg.out, cfg.force)
    return ckpt


def _ort_call(path: Path, kind: str, threads: int) -> Any:
    import numpy as np

    from ..runtimes.onnxruntime import OrtCall, make_session

    return OrtCall(make_session(path, threads), np.dtype(DTYPES[kind]))


def _parity(model: Any, call: Any, x: torch.Tensor, atol: float, rtol: float) -> dict[str, float]:
    """Max abs logit gap torch vs ORT per case: rows at full length, at half length, one row.

    Raises:
        ParityError: a case whose shapes differ, whose logits are not finite, or
            where a logit is past ``atol + rtol * |torch logit|``.
    """
    from ..runtimes.parity import check_close

    half = max(1, x.shape[1] // 2)
    cases = {"full_length": x, "half_length": x[:, :half].contiguous(), "one_row": x[:1]}
    with torch.inference_mode():
        return {name: check_close(model(v), call(v), atol, rtol, f"ORT fp32 vs torch ({name.replace('_', ' ')})")
                for name, v in cases.items()}


def _checks(model: Any, folder: Path, files: list[str], data: Any, cfg: Any, threads: int,
            progress: Progress) -> tuple[dict[str, Any], dict[str, float]]:
    """Parity on validation rows (raises past the tolerance) and test accuracy per runtime."""
    from ..runtimes import accuracy
    from ..runtimes.parity import ParityError

    kind = model.config.input_kind
    calls = {p: _ort_call(folder / FILES[p], kind, threads) for p in files}
    with progress.task("checking torch vs ORT", total=1 + len(files)) as bar:
        try:
            gaps = _parity(model, calls["fp32"], data.val.x[: cfg.check_rows], cfg.tolerance, cfg.rtol)
        except ParityError as exc:
            raise ParityError(f"{exc} on validation rows; nothing written") from None
        parity = {"rows": int(min(cfg.check_rows, len(data.val))), "split": "val", "tolerance": cfg.tolerance,
                  "rtol": cfg.rtol, "max_abs_gap": max(gaps.values()), "max_abs_gap_by_case": gaps}
        bar.advance(1)
        acc = {"checkpoint": accuracy(model, data.test)}
        for p, call in calls.items():
            acc[f"ort_{p}"] = accuracy(call, data.test)
            bar.advance(1)
    return parity, acc


def _file_facts(folder: Path, precisions: list[str], threads: int) -> dict[str, dict[str, Any]]:
    out = {}
    for p in precisions:
        f = folder / FILES[p]
        out[p] = {"file": f.name, "bytes": f.stat().st_size, "sha256": file_sha256(f),
                  "ops": op_counts(f), "optimized_ops": optimized_op_counts(f, threads)}
    return out


def _requires(exporter: dict[str, Any]) -> dict[str, str]:
    """What a runtime needs to run the files right (recorded for whoever deploys them)."""
    from ..runtimes.onnxruntime import FUSED_ATTENTION_MIN_ORT

    if exporter.get("fused_attention_layers"):
        return {"onnxruntime": ">=" + ".".join(map(str, FUSED_ATTENTION_MIN_ORT)), "ops": exporter["attention_op"]}
    return {}


def _meta(ckpt: Any, data: Any, exporter: dict[str, Any], quant: dict[str, Any] | None,
          files: dict[str, Any], parity: dict[str, Any], acc: dict[str, float], cfg: Any) -> dict[str, Any]:
    from ..config import to_dict
    from ..environment import environment
    from ..runtimes import RUNTIMES

    mc = ckpt.model_config
    return {
        "format": FORMAT, "version": VERSION,
        "input": {"name": INPUT_NAME, "kind": mc.input_kind, "dtype": DTYPES[mc.input_kind],
                  "shape": ["batch", "sequence"] + (["features"] if mc.input_kind == "features" else []),
                  "max_len": mc.max_len, "padding_id": mc.pad_id if mc.input_kind == "tokens" else None,
                  "feature_dim": mc.feature_dim or None, "vocab_size": mc.vocab_size or None,
                  "dynamic_axes": exporter["dynamic_axes"]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", mc.num_classes], "meaning": "logits"},
        "labels": list(data.labels),
        "task": ckpt.task_spec,
        "model": mc.to_dict(),
        "files": files,
        "exporter": exporter,
        "requires": _requires(exporter),
        "quantization": quant,
        "source": {"path": str(ckpt.path), "id": ckpt.meta.get("id"), "kind": ckpt.kind,
                   "metrics": ckpt.meta.get("metrics", {}), "lineage": ckpt.meta.get("lineage", [])},
        "checks": {"parity": parity, "test_acc": acc},
        "config": to_dict(cfg),
        "environment": {**environment(), **RUNTIMES["onnxruntime"].versions()},
    }


def write_export(model: Any, folder: Path, int8: bool, reduce_range: bool = False,
                 per_channel: bool = False, opset: int = 18, qkv: bool = True, attention: bool = True,
                 exporter: str = "dynamo") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Write ``model.onnx`` (and ``model.int8.onnx``) of a float model into ``folder`` (no checks, no JSON).

    Used by :func:`export` and by ``mhsa bench`` (temporary exports).

    Returns:
        (exporter settings, quantization settings or None).
    """
    example = tracing_input(model)
    settings = to_onnx(model, example, folder / FILES["fp32"], opset, attention, qkv, exporter)
    quant = quantize_onnx(folder / FILES["fp32"], folder / FILES["int8"], reduce_range, per_channel) if int8 else None
    if int8:
        check_int8_graph(op_counts(folder / FILES["int8"]), folder / FILES["int8"])
    return settings, quant


def tracing_input(model: Any) -> torch.Tensor:
    """A tracing input of the model's full shape (2 rows, so no axis is size 1)."""
    c = model.config
    if c.input_kind == "tokens":
        return torch.ones(2, c.max_len, dtype=torch.long)
    return torch.zeros(2, c.max_len, c.feature_dim)


def export(cfg: Any, progress: Progress = NULL) -> ExportResult:
    """``mhsa export``: ONNX (fp32, and ORT dynamic int8) of a float checkpoint, checked.

    Args:
        cfg: an :class:`~mhsa_cli.config.ExportConfig`.
        progress: bars for the export and the checks.

    Returns:
        :class:`ExportResult` (``meta`` is the export.json written).

    Raises:
        MhsaError: missing/corrupt or torch-int8 checkpoint (its float parent
            named), an existing ``--out`` without ``--force``, ORT fp32 logits
            of another shape than torch's, not finite, or past ``--tolerance`` +
            ``--rtol`` x |torch logit| (a ParityError). Nothing is written then.
    """
    from ..checkpoint import _write_json, atomic_dir, load_model
    from ..environment import set_threads
    from ..tasks import task_from_spec

    ckpt = _load_source(cfg)
    threads = set_threads(cfg.threads)
    model = load_model(ckpt)
    data = task_from_spec(ckpt.task_spec)
    precisions = ["fp32", "int8"] if cfg.int8 else ["fp32"]
    box: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        with progress.task("exporting to ONNX" + (" + int8" if cfg.int8 else ""), total=1) as bar:
            exporter, quant = write_export(model, tmp, cfg.int8, cfg.reduce_range, cfg.per_channel, cfg.opset,
                                           cfg.fuse_qkv, cfg.fuse_attention, cfg.exporter)
            bar.advance(1)
        parity, acc = _checks(model, tmp, precisions, data, cfg, threads, progress)
        files = _file_facts(tmp, precisions, threads)
        box["meta"] = _meta(ckpt, data, exporter, quant, files, parity, acc, cfg)
        _write_json(tmp / META, box["meta"])

    atomic_dir(Path(cfg.out), cfg.force, write)
    meta = box["meta"]
    acc = meta["checks"]["test_acc"]
    notes = []
    if "ort_int8" in acc and 100 * (acc["checkpoint"] - acc["ort_int8"]) > INT8_ACC_BUDGET_PTS:
        notes.append(f"ORT int8 loses {100 * (acc['checkpoint'] - acc['ort_int8']):.2f} points of test accuracy "
                     f"(more than {INT8_ACC_BUDGET_PTS}); try --reduce-range or ship fp32")
    return ExportResult(str(cfg.out), str(ckpt.path), meta["files"], meta["checks"]["parity"], acc, threads,
                        notes, meta)
