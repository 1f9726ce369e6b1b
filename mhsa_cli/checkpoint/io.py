"""Saving and loading checkpoints (safetensors + JSON, never pickle): :class:`Checkpoint`,
:func:`make_meta`, :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_model`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..environment import environment
from ..errors import MhsaError, cap
from ..hashing import file_sha256
from ..model import ModelConfig
from ..registry import CHECKPOINT_KINDS
from .kinds import check_finite
from .outputs import _write_json, atomic_dir, write_files
from .schema import FORMAT, VERSION, validate_meta

WEIGHTS = "model.safetensors"
META = "checkpoint.json"


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
            article = "an" if self.kind[:1] in "aeiou" else "a"
            raise MhsaError(f"cannot {action} {self.path}: it is {article} {self.kind} checkpoint"
                            + (f"; {hint}" if hint else ""))


FINETUNE_LOOP = ("lr", "warmup", "schedule")  # what later stages take from an --init fine-tune


def finetune_loop(meta: dict[str, Any]) -> dict[str, Any]:
    """The loop settings of the latest ``train --init`` step in a checkpoint's lineage ({} if none).

    A model fine-tuned from a pretrained encoder is fine-tuned again (after pruning) or
    distilled with its own small learning rate and schedule, not a from-scratch default."""
    for step in reversed(meta.get("lineage") or []):
        settings = step.get("settings") or {}
        if step.get("operation") == "train" and settings.get("init"):
            return {k: settings[k] for k in FINETUNE_LOOP if settings.get(k) is not None}
    return {}


def training_loop(meta: dict[str, Any]) -> dict[str, Any]:
    """What ``mhsa prune`` fine-tunes with: the loop of the training its weights continue ({} if none).

    After ``train --init``: :func:`finetune_loop`. Otherwise the latest from-scratch ``train`` step,
    with its word dropout (the text task's own tokenizer), unless a ``distill`` step made the weights
    since (a student is a new training, with its own settings): pruning removes units and
    fine-tuning resumes the same training, so it keeps its learning rate and regularisation."""
    inherited = finetune_loop(meta)
    if inherited:
        return inherited
    for step in reversed(meta.get("lineage") or []):
        settings = step.get("settings") or {}
        if step.get("operation") == "distill":
            return {}
        if step.get("operation") == "train":
            return {k: settings[k] for k in (*FINETUNE_LOOP, "token_dropout") if settings.get(k) is not None}
    return {}


def weights_id(path: Path) -> str:
    """Content hash of a weights file (first 16 hex digits of SHA-256)."""
    return file_sha256(path)[:16]


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

    parent = (meta.get("lineage") or [{}])[-1].get("parent")
    return atomic_dir(Path(out), force, write, inputs=[parent])


def save_model(out: str | Path, model: nn.Module, meta: dict[str, Any], force: bool = False,
               extra_files: dict[str, Any] | None = None) -> Path:
    """Save a float model (its state dict) with ``meta``."""
    return save_checkpoint(out, dict(model.state_dict()), meta, force, extra_files)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint folder (JSON + safetensors; no pickle).

    This is the one place where a checkpoint is checked, for every command: the
    JSON against its schema (:func:`validate_meta`), the weights against the JSON
    (names, shapes -- so per-layer head counts -- and dtypes, by the kind's
    ``check``), and every floating-point weight for NaN/Inf.

    Raises:
        MhsaError: missing folder or files, corrupt JSON or weights, unknown format
            or kind, a field of the wrong type, weights that disagree with the JSON,
            non-finite weights. One line starting with ``checkpoint PATH:``.
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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else cap(str(exc))
        raise MhsaError(f"checkpoint {path}: {META} is not valid JSON ({why})") from None
    try:
        validate_meta(meta)
    except MhsaError as exc:
        raise MhsaError(f"checkpoint {path}: {META}: {exc}") from None
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MhsaError(f"checkpoint {path}: {WEIGHTS} is corrupt ({cap(str(exc).splitlines()[0])})") from None
    ckpt = Checkpoint(path, meta, tensors)
    try:
        CHECKPOINT_KINDS[ckpt.kind].check(ckpt)
        check_finite(tensors)
    except MhsaError as exc:
        raise MhsaError(f"checkpoint {path}: {exc}") from None
    return ckpt


def load_model(ckpt: Checkpoint | str | Path) -> nn.Module:
    """Rebuild the model of a checkpoint in eval mode on CPU, by its kind's loader.

    Float checkpoints build :class:`MHSAClassifier` from the JSON and load the
    weights strictly; int8 checkpoints are rebuilt by :mod:`mhsa_cli.quantize`
    (registered as kind ``int8``; this module does not import it).

    Raises:
        MhsaError: the JSON's shapes disagree with the weights.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    return CHECKPOINT_KINDS[ckpt.kind].load(ckpt)


def size_on_disk(path: str | Path) -> int:
    """Bytes of the weights file of a checkpoint folder."""
    return (Path(path) / WEIGHTS).stat().st_size
