"""The export folder format: what ``mhsa export`` writes and the ORT runtime reads.

An export folder::

    model.onnx        fp32 graph (input "input", output "logits"; dynamic batch and sequence axes)
    model.int8.onnx   dynamic int8 graph (onnxruntime.quantization), optional
    export.json       input spec, labels, task (tokenizer / vocabulary), source checkpoint and
                      its lineage, versions, the parity and accuracy the export measured, and
                      each ONNX file's SHA-256 (so a folder whose files were swapped is refused)

This module only defines and checks the format (no torch.onnx, no onnxruntime),
so the runtime registry below the export command can read folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import MhsaError, cap
from ..hashing import file_sha256  # noqa: F401  (export.command imports it from here)

FORMAT = "mhsa-export"
VERSION = 1
META = "export.json"
# precision -> file name; int8 = ORT dynamic int8, or whichever int8 `mhsa export`'s quality gate kept;
# int8-static = static (QDQ) int8 beside the dynamic one (bench's temporary exports)
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int8-static": "model.int8-static.onnx"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DTYPES = {"tokens": "int64", "features": "float32"}  # input kind -> ONNX input element type


def is_export_folder(path: str | Path) -> bool:
    """True for a folder holding ``export.json``."""
    return (Path(path) / META).is_file()


def read_export_meta(path: str | Path) -> dict[str, Any]:
    """Read and check an export folder's ``export.json``.

    Raises:
        MhsaError: not a folder (e.g. a bare ``.onnx`` file), no or corrupt
            ``export.json``, or one that is not an mhsa export.
    """
    path = Path(path)
    if path.is_file():
        raise MhsaError(f"{path} is a file; expected an export folder (made by `mhsa export`, "
                        f"holding {META} and {FILES['fp32']})")
    if not (path / META).is_file():
        raise MhsaError(f"{path} is not an export folder: no {META} (make one with `mhsa export CKPT --out DIR`)")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MhsaError(f"export folder {path}: {META} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MhsaError(f"export folder {path}: {META} is not an mhsa export")
    for key in ("input", "files", "model", "task"):
        if key not in meta:
            raise MhsaError(f"export folder {path}: {META} has no '{key}'")
        if not isinstance(meta[key], dict):
            raise MhsaError(f"export folder {path}: {META} '{key}' must be a mapping")
    try:
        _check_classes(meta)
    except MhsaError as exc:
        raise MhsaError(f"export folder {path}: {exc}") from None
    return meta


def _check_classes(meta: dict[str, Any]) -> None:
    """Input kind and name, class count and labels agree within ``export.json``.

    ``labels`` (distinct names, one per class) is required; only the temporary folders
    ``mhsa bench`` writes for itself (``"temporary"``) carry none.
    """
    from ..labels import check_labels

    kind, name = meta["input"].get("kind"), meta["input"].get("name", INPUT_NAME)
    if kind not in DTYPES:
        raise MhsaError(f"{META} input kind {kind!r} is not one of: {', '.join(DTYPES)}")
    if name != INPUT_NAME:
        raise MhsaError(f"{META} names the input {name!r}, but mhsa graphs take {INPUT_NAME!r}")
    count = meta["model"].get("num_classes")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise MhsaError(f"{META} model.num_classes must be an integer >= 1, got {count!r}")
    if "labels" not in meta and not meta.get("temporary"):
        raise MhsaError(f"{META} has no 'labels' (the class names): re-export it")
    labels = check_labels(meta["labels"], f"{META} 'labels'", count) if "labels" in meta else None
    if "labels" in meta["task"]:
        task_labels = check_labels(meta["task"]["labels"], f"{META} 'task.labels'", count)
        if labels is not None and task_labels != labels:
            raise MhsaError(f"{META} 'labels' and 'task.labels' disagree: {cap(labels, 80)} vs {cap(task_labels, 80)}")


def onnx_file(path: str | Path, meta: dict[str, Any], precision: str) -> Path:
    """The ONNX file of ``precision``, once every file ``export.json`` lists is checked against
    the SHA-256 it records (:func:`verify_files`: the folder is loaded whole or not at all).

    Raises:
        MhsaError: the folder has no such precision, or a listed file is missing, outside
            the folder, or not the file the JSON describes.
    """
    path = Path(path)
    entry = meta["files"].get(precision)
    if not isinstance(entry, dict) or "file" not in entry:
        have = ", ".join(meta["files"]) or "none"
        raise MhsaError(f"export folder {path} has no {precision} model (has: {have}); "
                        + ("export without --no-int8" if precision == "int8" else "re-export it"))
    return verify_files(path, meta)[precision]


def verify_files(path: Path, meta: dict[str, Any]) -> dict[str, Path]:
    """Every file of ``meta["files"]`` (precision -> {file, sha256}): a plain name in ``path``,
    present, with the recorded SHA-256 (a truncated, swapped or replaced file differs).

    Returns:
        precision -> file path.

    Raises:
        MhsaError: one line naming the first file at fault.
    """
    out = {}
    for precision, entry in meta["files"].items():
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise MhsaError(f"export folder {path}: {META} lists {precision} file {cap(repr(name), 60)}, "
                            "not a file name in the folder")
        f = path / name
        if not f.is_file():
            raise MhsaError(f"export folder {path}: {name} is missing (listed in {META}): re-export it")
        if not isinstance(entry.get("sha256"), str):
            raise MhsaError(f"export folder {path}: {META} records no SHA-256 for {name}: re-export it")
        if entry["sha256"] != file_sha256(f):
            raise MhsaError(f"export folder {path}: {name} does not match {META} (SHA-256 differs; "
                            "the file was truncated, swapped or changed after export): re-export it")
        out[precision] = f
    return out
