"""``mhsa export``: a float checkpoint -> a self-describing ONNX folder, checked.

:func:`export` writes ``model.onnx`` (fp32, :func:`.onnx.to_onnx`; q/k/v
projections one product per layer, attention one node, :mod:`.lean`), with
``--int8`` one int8 graph per ``--int8-methods`` (:mod:`.int8`: ORT dynamic, and
static QDQ calibrated on validation rows), of which the quality gate keeps the
fastest within ``--max-drop`` points of fp32 on validation as ``model.int8.onnx``
(:func:`.int8.gate`), and ``export.json`` (:mod:`mhsa_cli.runtimes.folder`) into a
temporary folder, checks it and only then renames it into place. The gate and
the checks load the folder through the runtime registry
(:func:`mhsa_cli.runtimes.load_runtime`), as ``mhsa bench`` and ``mhsa predict``
do, so they also check what a user of the folder gets (file hashes, graph
signature, the onnxruntime version guard):

* parity: ORT fp32 logits vs torch on validation rows, at full length, at
  half length (the dynamic sequence axis) and for one row (the dynamic batch
  axis); shapes must match, every logit be finite and within ``--tolerance``
  (atol, 1e-4) + ``--rtol`` (1e-5) x its torch value (:mod:`mhsa_cli.runtimes.parity`);
* accuracy: test accuracy of the checkpoint in torch, of ORT fp32 and ORT int8;
* the int8 graph holds integer nodes (dynamic: ``DynamicQuantizeLinear`` and
  ``MatMulInteger``; static: ``QuantizeLinear`` / ``DequantizeLinear``).

Only accuracy, the int8 gate and static int8 need the checkpoint's data. Without
it (an import without ``--data``, or a data file gone:
:func:`mhsa_cli.tasks.task_or_reason`) the input spec, tokenizer and labels
still come from the checkpoint, parity runs on seeded rows built from its config
(:func:`mhsa_cli.model.probe_input`), ``--int8`` writes dynamic int8 only, kept
without the gate (``int8_gate.skipped`` says why), and export.json records
``checks.test_acc: null`` with the reason in ``checks.test_acc_not_measured``
("no data ...").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import MhsaError
from ..progress import NULL, Progress
from ..runtimes.folder import DTYPES, FILES, FORMAT, INPUT_NAME, META, OUTPUT_NAME, VERSION, file_sha256
from .int8 import calibration_batches
from .onnx import check_int8_graph, op_counts, optimized_op_counts, to_onnx

INT8_ACC_BUDGET_PTS = 0.5  # int8 losing more test accuracy than this gets a note


@dataclass
class ExportResult:
    """What :func:`export` returns (the CLI renders it); the same facts as export.json."""

    out: str
    source: str
    files: dict[str, dict[str, Any]]  # precision -> file, bytes, sha256, ops, optimized_ops
    parity: dict[str, Any]  # rows, max_abs_gap per check, tolerance
    accuracy: dict[str, float]  # checkpoint (torch), ort_fp32, ort_int8: test accuracy ({} without data)
    threads: int
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)


def _load_source(cfg: Any) -> Any:
    """The float checkpoint; an int8 one is refused naming its float parent."""
    from ..checkpoint import check_output_dir, load_checkpoint

    check_output_dir(cfg.out, cfg.force, inputs=[cfg.checkpoint])  # before any work: --out may hold the input
    ckpt = load_checkpoint(cfg.checkpoint)
    if ckpt.kind != "float":
        parent = next((s.get("parent") for s in reversed(ckpt.meta.get("lineage") or [])
                       if s.get("operation") == "quantize"), None)
        raise MhsaError(f"cannot export {ckpt.path}: it is a torch-{ckpt.kind} checkpoint; export its float "
                        f"parent{f' ({parent})' if parent else ''} instead (--int8 makes ORT's own int8)")
    return ckpt


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


PARITY_ROWS = {"val": "validation rows",  # what the parity check ran on, by export.json's checks.parity.split
               "probe": "seeded rows built from the checkpoint (random ids of varied lengths, its pad id)"}


def _parity_rows(model: Any, data: Any, n: int) -> tuple[torch.Tensor, str]:
    """The first ``n`` validation rows, or without data ``n`` rows built from the model's config."""
    from ..model import probe_input

    if data is not None:
        return data.val.x[:n], "val"
    return probe_input(model, batch=n), "probe"


def _checks(model: Any, folder: Path, files: list[str], data: Any, why: str | None, cfg: Any, threads: int,
            progress: Progress) -> dict[str, Any]:
    """Parity (raises past the tolerance) and, with data, test accuracy per runtime; the folder's
    files are loaded through the runtime registry, as ``mhsa bench`` and ``mhsa predict`` load them."""
    from ..runtimes import accuracy, load_runtime
    from ..runtimes.parity import ParityError

    calls = {p: load_runtime("onnxruntime", folder, p, threads).call for p in files}
    x, split = _parity_rows(model, data, cfg.check_rows)
    with progress.task("checking torch vs ORT", total=1 + len(files)) as bar:
        try:
            gaps = _parity(model, calls["fp32"], x, cfg.tolerance, cfg.rtol)
        except ParityError as exc:
            raise ParityError(f"{exc} on {PARITY_ROWS[split]}; nothing written") from None
        parity = {"rows": int(x.shape[0]), "split": split, "tolerance": cfg.tolerance,
                  "rtol": cfg.rtol, "max_abs_gap": max(gaps.values()), "max_abs_gap_by_case": gaps}
        bar.advance(1)
        if data is None:  # accuracy needs data; parity does not
            return {"parity": parity, "test_acc": None, "test_acc_not_measured": why}
        acc = {"checkpoint": accuracy(model, data.test)}
        for p, call in calls.items():
            acc[f"ort_{p}"] = accuracy(call, data.test)
            bar.advance(1)
    return {"parity": parity, "test_acc": acc}


def _int8_gate(folder: Path, quant: dict[str, dict[str, Any]], data: Any, cfg: Any, threads: int,
               progress: Progress) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Measure each int8 file on validation (:func:`.int8.gate`); keep the chosen one as
    ``model.int8.onnx`` and delete the rest. Returns (the gate's record, the kept file's
    quantization settings or None).

    The files are loaded through the runtime registry, so ``folder`` must hold an
    ``export.json`` listing them all (:func:`_listed`)."""
    from ..runtimes import load_runtime
    from .int8 import gate

    def call(precision: str) -> Any:
        return load_runtime("onnxruntime", folder, precision, threads).call

    with progress.task(f"int8 quality gate ({len(quant)} variant(s), validation)", total=1) as bar:
        calls = {q["method"]: call(p) for p, q in quant.items()}
        record = gate(calls, call("fp32"), data.val, cfg.max_drop, threads)
        bar.advance(1)
    chosen = record["chosen"]
    keep = next((p for p, q in quant.items() if q["method"] == chosen), None)
    for p in quant:
        if p != keep:
            (folder / FILES[p]).unlink()
    if keep is not None and keep != "int8":
        (folder / FILES[keep]).rename(folder / FILES["int8"])
    return record, quant.get(keep) if keep else None


def _ungated(asked: tuple[str, ...], quant: dict[str, dict[str, Any]], why: str | None,
             max_drop: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Without data: no gate (it measures on validation); dynamic int8 is kept unmeasured and
    static int8 is not made (its calibration reads validation rows). Returns what :func:`_int8_gate` does."""
    not_made = {m: "its calibration needs validation rows" for m in asked if m != "dynamic"}
    text = f"int8 gate skipped ({why}): dynamic int8 kept as {FILES['int8']} without a validation check"
    if not_made:
        text += f"; {', '.join(not_made)} int8 not made ({next(iter(not_made.values()))})"
    record = {"max_drop_pts": max_drop, "fp32_val_acc": None, "variants": {}, "chosen": "dynamic",
              "skipped": why, "not_made": not_made, "why": text}
    return record, quant.get("int8")


def _listed(folder: Path, precisions: list[str]) -> dict[str, dict[str, Any]]:
    """``export.json`` files entries (name, SHA-256) of a provisional folder, so the runtime loads them."""
    return {p: {"file": FILES[p], "sha256": file_sha256(folder / FILES[p])} for p in precisions}


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


def _meta(ckpt: Any, labels: list[str], exporter: dict[str, Any], quant: dict[str, Any] | None,
          files: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """export.json, ``checks`` still None (filled once the folder loads and passes them)."""
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
        "labels": list(labels),
        "task": ckpt.task_spec,
        "model": mc.to_dict(),
        "files": files,
        "exporter": exporter,
        "requires": _requires(exporter),
        "quantization": quant,
        "source": {"path": str(ckpt.path), "id": ckpt.meta.get("id"), "kind": ckpt.kind,
                   "metrics": ckpt.meta.get("metrics", {}), "lineage": ckpt.meta.get("lineage", [])},
        "checks": None,
        "config": to_dict(cfg),
        "environment": {**environment(), **RUNTIMES["onnxruntime"].versions()},
    }


INT8_PRECISION = {"dynamic": "int8", "static": "int8-static"}  # int8 method -> precision (its file: FILES)


def write_export(model: Any, folder: Path, int8: bool, reduce_range: bool = False,
                 per_channel: bool = False, opset: int = 18, qkv: bool = True, attention: bool = True,
                 exporter: str = "dynamo",
                 int8_methods: tuple[str, ...] = ("dynamic",), calibration: list[Any] | None = None,
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Write ``model.onnx`` (and an int8 file per method) of a float model into ``folder``
    (no checks, no JSON).

    Used by :func:`export` and by ``mhsa bench`` (temporary exports).

    Args:
        int8_methods: :data:`.int8.INT8_METHODS` keys; ``dynamic`` writes ``model.int8.onnx``,
            ``static`` ``model.int8-static.onnx`` (calibrated on ``calibration``: validation batches).

    Returns:
        (exporter settings, {int8 precision: quantization settings}).
    """
    from .int8 import INT8_METHODS

    example = tracing_input(model)
    settings = to_onnx(model, example, folder / FILES["fp32"], opset, attention, qkv, exporter)
    quant = {}
    for method in int8_methods if int8 else ():
        dst = folder / FILES[INT8_PRECISION[method]]
        quant[INT8_PRECISION[method]] = INT8_METHODS[method](folder / FILES["fp32"], dst, calibration,
                                                             per_channel, reduce_range)
        check_int8_graph(op_counts(dst), dst, method)
    return settings, quant


def tracing_input(model: Any) -> torch.Tensor:
    """A tracing input of the model's full shape (2 rows, so no axis is size 1)."""
    c = model.config
    if c.input_kind == "tokens":
        return torch.ones(2, c.max_len, dtype=torch.long)
    return torch.zeros(2, c.max_len, c.feature_dim)


def export(cfg: Any, progress: Progress = NULL) -> ExportResult:
    """``mhsa export``: ONNX (fp32, and the ORT int8 the quality gate keeps) of a float checkpoint, checked.

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
    from ..tasks import task_or_reason

    ckpt = _load_source(cfg)
    threads = set_threads(cfg.threads)
    model = load_model(ckpt)
    data, why = task_or_reason(ckpt.task_spec)
    asked = tuple(dict.fromkeys(cfg.int8_methods))
    methods = asked if data is not None else ("dynamic",)  # static calibrates on validation rows
    calibration = calibration_batches(data.val) if cfg.int8 and "static" in methods else None
    box: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        with progress.task("exporting to ONNX" + (f" + int8 ({', '.join(methods)})" if cfg.int8 else ""),
                           total=1) as bar:
            exporter, quant = write_export(model, tmp, cfg.int8, cfg.reduce_range, cfg.per_channel, cfg.opset,
                                           cfg.fuse_qkv, cfg.fuse_attention, cfg.exporter, methods, calibration)
            bar.advance(1)
        labels = _labels(ckpt, data)
        gate_record, kept = None, None
        if quant and data is None:
            gate_record, kept = _ungated(asked, quant, why, cfg.max_drop)
        elif quant:  # a provisional export.json: the gate loads every file through the runtime registry
            _write_json(tmp / META, _meta(ckpt, labels, exporter, None, _listed(tmp, ["fp32", *quant]), cfg))
            gate_record, kept = _int8_gate(tmp, quant, data, cfg, threads, progress)
        precisions = ["fp32"] + (["int8"] if kept else [])
        meta = box["meta"] = _meta(ckpt, labels, exporter, kept, _file_facts(tmp, precisions, threads), cfg)
        meta["int8_gate"] = gate_record
        _write_json(tmp / META, meta)  # a loadable folder: the checks load it through the runtime registry
        meta["checks"] = _checks(model, tmp, precisions, data, why, cfg, threads, progress)
        _write_json(tmp / META, meta)

    atomic_dir(Path(cfg.out), cfg.force, write, inputs=[cfg.checkpoint])
    meta = box["meta"]
    acc = meta["checks"]["test_acc"] or {}
    notes = [meta["int8_gate"]["why"]] if meta.get("int8_gate") else []
    return ExportResult(str(cfg.out), str(ckpt.path), meta["files"], meta["checks"]["parity"], acc, threads,
                        notes + _notes(acc, why), meta)


def _labels(ckpt: Any, data: Any) -> list[str]:
    """Class names: the data's, else the checkpoint's task spec's, else the class ids."""
    if data is not None:
        return list(data.labels)
    return [str(c) for c in ckpt.task_spec.get("labels") or range(ckpt.model_config.num_classes)]


def _notes(acc: dict[str, float], why: str | None) -> list[str]:
    """Accuracy not measured (and why), or an int8 graph that loses too much of it."""
    if why is not None:
        return [f"test accuracy not measured ({why}); parity ran on {PARITY_ROWS['probe']}"]
    lost = 100 * (acc["checkpoint"] - acc.get("ort_int8", acc["checkpoint"]))
    if lost > INT8_ACC_BUDGET_PTS:
        return [f"ORT int8 loses {lost:.2f} points of test accuracy (more than {INT8_ACC_BUDGET_PTS}); "
                "try --reduce-range or ship fp32"]
    return []
