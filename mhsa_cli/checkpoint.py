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
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .environment import environment
from .errors import MhsaError, cap
from .registry import CHECKPOINT_KINDS
from .model import MHSAClassifier, ModelConfig, build_model

FORMAT = "mhsa-checkpoint"
VERSION = 1
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


def check_output_dir(out: str | Path | None, force: bool, inputs: Any = ()) -> Path:
    """Validate an output folder before any work starts, so that a bad ``--out`` costs nothing.

    Args:
        out: the folder to write (it is created, or replaced with ``force``).
        force: an existing non-empty folder may be replaced.
        inputs: paths the command reads (checkpoints, data files): ``out`` must not be one
            of them nor contain one, since replacing ``out`` would delete it.

    Returns:
        ``out`` as a Path.

    Raises:
        MhsaError: empty path; a symlink loop or broken symlink on the way; a file where
            the folder or one of its parents should be; a parent that cannot be written;
            the current folder (or one above it); an input inside ``out``; or a non-empty
            folder without ``force``.
    """
    if out is None or not str(out).strip():
        raise MhsaError("the output folder is empty: give --out a folder name")
    out = Path(out)
    try:
        real = out.resolve()
    except (RuntimeError, OSError):  # a symlink loop on the way (Python < 3.13: RuntimeError)
        raise MhsaError(f"output path {out} goes through a symlink loop") from None
    if out.is_symlink() and not out.exists():
        raise MhsaError(f"output path {out} is a broken symlink (to {os.readlink(out)})")
    if out.exists() and not out.is_dir():
        raise MhsaError(f"output path {out} is a file, not a folder")
    _check_parent(out, real)
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise MhsaError(f"output folder {out} is the current folder or above it; name a new folder")
    for path in [inputs] if isinstance(inputs, (str, Path)) else list(inputs or ()):
        if path is None or not str(path):
            continue
        inp = Path(path).resolve()
        if real == inp or real in inp.parents:
            what = "is" if real == inp else "contains"
            raise MhsaError(f"output folder {out} {what} the input {path}; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MhsaError(f"output folder {out} already exists; pass --force to replace it")
    return out


def _check_parent(out: Path, real: Path) -> None:
    """The nearest existing folder above ``out`` must be a folder we can write into."""
    parent = real.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MhsaError(f"cannot create output folder {out}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MhsaError(f"cannot create output folder {out}: {parent} is not writable")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def atomic_dir(out: Path, force: bool, write: Any, inputs: Any = ()) -> Path:
    """Call ``write(tmp_dir)`` then put ``tmp_dir`` in place of ``out``; never lose the old folder.

    ``write`` fills a hidden temporary folder beside ``out``. With ``force`` and an
    existing ``out``, the old folder is first renamed aside, the new one renamed in,
    and only then is the old one deleted; if the second rename fails, the old folder
    is renamed back. If anything fails (or Ctrl-C), the temporary folder is removed
    and ``out`` is as it was.

    Raises:
        MhsaError: ``out`` fails :func:`check_output_dir` (with ``inputs``).
    """
    out = check_output_dir(out, force, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        _swap_in(tmp, out, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)  # only once the new folder is in place
    return out


def _swap_in(new: Path, out: Path, old: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` goes aside to ``old`` first and comes back on failure."""
    if not out.exists():
        os.replace(new, out)
        return
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        if not out.exists():
            os.replace(old, out)  # put the old folder back before reporting the failure
        raise


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

    parent = (meta.get("lineage") or [{}])[-1].get("parent")
    return atomic_dir(Path(out), force, write, inputs=[parent])


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


# ------------------------------------------------------------------ the JSON schema

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


_MODEL_TYPES = {"input_kind": (str, "a string"), "max_len": (_is_int, "an integer"),
                "num_classes": (_is_int, "an integer"), "vocab_size": (_is_int, "an integer"),
                "feature_dim": (_is_int, "an integer"), "d_model": (_is_int, "an integer"),
                "heads": (lambda v: isinstance(v, list) and all(_is_int(h) for h in v), "a list of integers"),
                "head_dim": (_is_int, "an integer"), "d_ff": (_is_int, "an integer"),
                "dropout": (_is_num, "a number"), "pooling": (str, "a string")}
_MODEL_REQUIRED = ("input_kind", "max_len", "num_classes", "heads")
_OPTIONAL_MAPPINGS = ("config", "metrics", "environment", "extra")
_LINEAGE_TYPES = {"operation": (str, "a string"), "parent": ((str, type(None)), "a string or null"),
                  "parent_id": ((str, type(None)), "a string or null"), "settings": (dict, "a mapping"),
                  "time": (str, "a string")}


def _check_type(where: str, value: Any, rule: tuple[Any, str]) -> None:
    test, what = rule
    ok = test(value) if callable(test) and not isinstance(test, type) else isinstance(value, test)
    if not ok:
        raise MhsaError(f"'{where}' must be {what}, got {cap(json.dumps(value, default=str), 60)}")


def validate_meta(meta: Any) -> None:
    """Check the types of every field of ``checkpoint.json`` that a command reads.

    Checked: ``format``, ``version``, ``kind`` (a registered kind), ``model`` (every
    :class:`ModelConfig` field and its validation), ``task`` (a mapping with a string
    ``name``), ``config``/``metrics``/``environment``/``extra`` (mappings when present),
    ``lineage`` (a list of steps with a string ``operation``), ``id`` (a string).

    Raises:
        MhsaError: the first field at fault, by its JSON path (no path prefix).
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MhsaError("not an mhsa checkpoint (no \"format\": \"mhsa-checkpoint\")")
    for key in ("kind", "model", "task"):
        if key not in meta:
            raise MhsaError(f"no '{key}'")
    _check_type("version", meta.get("version", VERSION), (_is_int, "an integer"))
    if meta.get("version", VERSION) > VERSION:
        raise MhsaError(f"format version {meta['version']} is newer than this mhsa reads ({VERSION})")
    _check_type("kind", meta["kind"], (str, "a string"))
    if meta["kind"] not in CHECKPOINT_KINDS:
        raise MhsaError(f"unknown kind '{cap(meta['kind'], 40)}'; known: {', '.join(CHECKPOINT_KINDS)}")
    _validate_model(meta["model"])
    _check_type("task", meta["task"], (dict, "a mapping"))
    _check_type("task.name", meta["task"].get("name"), (str, "a string"))
    for key in _OPTIONAL_MAPPINGS:
        if key in meta:
            _check_type(key, meta[key], (dict, "a mapping"))
    if "id" in meta:
        _check_type("id", meta["id"], (str, "a string"))
    _check_type("lineage", meta.get("lineage", []), (list, "a list"))
    for i, step in enumerate(meta.get("lineage", [])):
        _check_type(f"lineage[{i}]", step, (dict, "a mapping"))
        _check_type(f"lineage[{i}].operation", step.get("operation"), (str, "a string"))
        for key, rule in _LINEAGE_TYPES.items():
            if key in step:
                _check_type(f"lineage[{i}].{key}", step[key], rule)


def _validate_model(model: Any) -> None:
    _check_type("model", model, (dict, "a mapping"))
    for key in _MODEL_REQUIRED:
        if key not in model:
            raise MhsaError(f"no 'model.{key}'")
    for key, value in model.items():
        if key in _MODEL_TYPES:
            _check_type(f"model.{key}", value, _MODEL_TYPES[key])
    try:
        ModelConfig.from_dict(model)
    except MhsaError as exc:
        raise MhsaError(f"bad model config ({exc})") from None


# ------------------------------------------------------------------ weights against the JSON

@dataclass(frozen=True)
class CheckpointKind:
    """A kind of checkpoint, registered in :data:`mhsa_cli.registry.CHECKPOINT_KINDS`.

    ``check(ckpt)`` compares the weights with the JSON (raises :class:`MhsaError`
    without the path prefix); ``load(ckpt)`` rebuilds the model in eval mode on CPU.
    """

    name: str
    check: Callable[["Checkpoint"], None]
    load: Callable[["Checkpoint"], nn.Module]


def expected_state(config: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict a float model of ``config`` has, on the meta device (shapes, no memory)."""
    with torch.device("meta"):
        return dict(build_model(config).state_dict())


def check_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                  head_dim: int | None = None) -> None:
    """Names, shapes and floating dtypes of ``tensors`` exactly as ``expected`` (a meta state dict).

    Raises:
        MhsaError: the first disagreement; a head count that contradicts the weights is
            named as such (layer, heads in the JSON, heads the weights hold).
    """
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise MhsaError(f"weights disagree with the JSON architecture ({what})")
    for k, v in expected.items():
        got = tuple(tensors[k].shape)
        if got != tuple(v.shape):
            raise MhsaError(_shape_problem(k, got, tuple(v.shape), head_dim))
        if not tensors[k].is_floating_point():
            raise MhsaError(f"{k} is {tensors[k].dtype}, expected a floating-point tensor")


def _shape_problem(key: str, got: tuple[int, ...], want: tuple[int, ...], head_dim: int | None) -> str:
    parts = key.split(".")
    # q.weight is (H_l * head_dim, d_model): its rows say how many heads the weights hold
    if (head_dim and parts[0] == "blocks" and parts[2:] == ["attn", "q", "weight"] and len(got) == 2
            and got[1:] == want[1:] and got[0] % head_dim == 0):
        said, held = want[0] // head_dim, got[0] // head_dim
        return (f"layer {parts[1]}: the JSON says {said} head{'s' * (said != 1)} but the weights hold "
                f"{held} ({key}: {got})")
    return f"weights disagree with the JSON architecture ({key}: file {got}, JSON {want})"


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or Inf in any floating-point tensor (they would be benchmarked or crash quantize).

    Raises:
        MhsaError: names the first tensor and how many values are not finite.
    """
    for name, t in tensors.items():
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise MhsaError(f"weight {name} holds {bad:,} NaN/Inf value{'s' * (bad > 1)} "
                                "(a diverged or damaged model)")


def _check_float(ckpt: Checkpoint) -> None:
    config = ckpt.model_config
    check_tensors(ckpt.tensors, expected_state(config), config.head_dim)


def _load_float(ckpt: Checkpoint) -> nn.Module:
    model = build_model(ckpt.model_config)
    load_state(model, ckpt.tensors, ckpt.path)
    return model.eval()


CHECKPOINT_KINDS.register("float", CheckpointKind("float", _check_float, _load_float))
KINDS = CHECKPOINT_KINDS  # kind name -> CheckpointKind (int8 is registered by mhsa_cli.quantize.kind)


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
