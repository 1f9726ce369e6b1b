"""Checkpoints: a folder of safetensors weights + one JSON file. Never pickle.

Layout of a checkpoint folder::

    model.safetensors   weights (float, or int8 + scales for kind "int8")
    checkpoint.json     kind, architecture (per-layer heads), task spec, config,
                        metrics, environment, lineage
    *.json / *.md       extra files a stage adds (e.g. head_importance.json)

Writing is atomic: everything goes to a hidden temporary folder beside the
target, which is renamed into place at the end. An existing folder is only
replaced with ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .environment import environment
from .errors import MhsaError
from .model import MHSAClassifier, ModelConfig, build_model

FORMAT = "mhsa-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"
META = "checkpoint.json"
KINDS = ("float", "int8")


@dataclass
class Checkpoint:
    """A loaded checkpoint: its folder, its JSON and its tensors (CPU)."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta["model"])

    @property
    def task_spec(self) -> dict[str, Any]:
        return self.meta["task"]

    @property
    def name(self) -> str:
        return self.path.name

    def require_kind(self, kind: str, action: str, hint: str = "") -> None:
        """Refuse this checkpoint for ``action`` unless it is of ``kind``."""
        if self.kind != kind:
            raise MhsaError(f"cannot {action} {self.path}: it is a {self.kind} checkpoint" + (f"; {hint}" if hint else ""))


def check_output_dir(out: str | Path, force: bool) -> Path:
    """Validate an output folder before any work starts.

    Raises:
        MhsaError: the path is a file, or a non-empty folder and ``force`` is off.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MhsaError(f"output path {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MhsaError(f"output folder {out} already exists; pass --force to replace it")
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def atomic_dir(out: Path, force: bool, write: Any) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``out`` in one rename.

    If anything fails (or Ctrl-C), the temporary folder is removed and ``out``
    is untouched.
    """
    out = check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def weights_id(path: Path) -> str:
    """Content hash of a weights file (first 16 hex digits of SHA-256)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def make_meta(kind: str, model_config: ModelConfig, task_spec: dict[str, Any], operation: str,
              settings: dict[str, Any], metrics: dict[str, Any], parent: Checkpoint | None = None,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the JSON of a new checkpoint; lineage extends the parent's chain."""
    lineage = list(parent.meta.get("lineage", [])) if parent else []
    lineage.append({
        "operation": operation,
        "parent": str(parent.path) if parent else None,
        "parent_id": parent.meta.get("id") if parent else None,
        "settings": settings,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model": model_config.to_dict(),
        "task": task_spec,
        "config": settings,
        "metrics": metrics,
        "environment": environment(),
        "lineage": lineage,
        **({"extra": extra} if extra else {}),
    }


def save_checkpoint(out: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    force: bool = False, extra_files: dict[str, Any] | None = None) -> Path:
    """Write weights + JSON (+ extra JSON/text files) atomically into ``out``.

    Args:
        out: target folder.
        tensors: name -> tensor (made contiguous and moved to CPU here).
        meta: from :func:`make_meta`; ``id`` (weights hash) is added here.
        force: replace an existing folder.
        extra_files: file name -> str or bytes (written as is) or a JSON-able object.

    Returns:
        The folder written.
    """
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(cpu, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        meta["id"] = weights_id(tmp / WEIGHTS)
        _write_json(tmp / META, meta)
        write_files(tmp, extra_files or {})

    return atomic_dir(Path(out), force, write)


def write_files(folder: Path, files: dict[str, Any]) -> None:
    """Write ``files`` (name -> str or bytes, written as is, or a JSON-able object) into ``folder``."""
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        elif isinstance(content, str):
            (folder / name).write_text(content, encoding="utf-8")
        else:
            _write_json(folder / name, content)


def save_model(out: str | Path, model: nn.Module, meta: dict[str, Any], force: bool = False,
               extra_files: dict[str, Any] | None = None) -> Path:
    """Save a float model (its state dict) with ``meta``."""
    return save_checkpoint(out, dict(model.state_dict()), meta, force, extra_files)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder (JSON + safetensors; no pickle).

    Raises:
        MhsaError: missing folder or files, corrupt JSON or weights, unknown format.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise MhsaError(f"checkpoint {path} not found (expected a folder with {META} and {WEIGHTS})")
    for name in (META, WEIGHTS):
        if not (path / name).is_file():
            raise MhsaError(f"checkpoint {path} is missing {name}")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MhsaError(f"checkpoint {path}: {META} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MhsaError(f"checkpoint {path}: {META} is not an mhsa checkpoint")
    for key in ("kind", "model", "task"):
        if key not in meta:
            raise MhsaError(f"checkpoint {path}: {META} has no '{key}'")
    if meta["kind"] not in KINDS:
        raise MhsaError(f"checkpoint {path}: unknown kind '{meta['kind']}'")
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MhsaError(f"checkpoint {path}: {WEIGHTS} is corrupt ({str(exc).splitlines()[0]})") from None
    ckpt = Checkpoint(path, meta, tensors)
    try:
        ckpt.model_config  # validates the architecture
    except TypeError as exc:
        raise MhsaError(f"checkpoint {path}: bad model config ({exc})") from None
    return ckpt


def load_model(ckpt: Checkpoint | str | Path) -> nn.Module:
    """Rebuild the model of a checkpoint in eval mode on CPU.

    Float checkpoints build :class:`MHSAClassifier` from the JSON and load the
    weights strictly; int8 checkpoints are rebuilt by :mod:`mhsa_cli.quantize`.

    Raises:
        MhsaError: the JSON's shapes disagree with the weights.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    if ckpt.kind == "int8":
        from .quantize import rebuild_quantized

        return rebuild_quantized(ckpt).eval()
    model = build_model(ckpt.model_config)
    load_state(model, ckpt.tensors, ckpt.path)
    return model.eval()


def load_state(model: MHSAClassifier, tensors: dict[str, torch.Tensor], where: Any) -> None:
    """Strict state-dict load with a one-line error on any mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise MhsaError(f"checkpoint {where}: weights disagree with the JSON architecture ({what})")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise MhsaError(f"checkpoint {where}: weights disagree with the JSON architecture "
                            f"({k}: file {tuple(tensors[k].shape)}, JSON {tuple(v.shape)})")
    model.load_state_dict(tensors, strict=True)


def size_on_disk(path: str | Path) -> int:
    """Bytes of the weights file of a checkpoint folder."""
    return (Path(path) / WEIGHTS).stat().st_size
