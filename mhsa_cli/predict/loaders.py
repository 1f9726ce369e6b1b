"""Model loaders for ``mhsa predict``: ``path -> Loaded`` (a callable ``x -> logits``
plus the task spec that says how to tokenize and what the classes are).

A loader is a registry entry, so other runtimes plug in without touching the
predict loop: ``torch`` (checkpoints) and ``onnxruntime`` (``mhsa export``
folders, through :mod:`mhsa_cli.runtimes`) are registered with :func:`register`
(``detect`` says whether a folder is its kind, ``load`` returns a
:class:`Loaded`). ``--runtime auto`` picks the first loader whose ``detect``
accepts the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import MhsaError


@dataclass
class Loaded:
    """A model ready to predict: ``forward`` maps (B, T) int64 ids to (B, C) float logits."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    spec: dict[str, Any]  # the task spec (text: tokenizer JSON, max_len, labels, columns)
    kind: str  # float | int8 | ... (what the checkpoint says)
    runtime: str  # the loader's name


@dataclass
class Loader:
    """One runtime: ``detect(path) -> bool`` and ``load(path) -> Loaded``."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, "str | None"], Loaded]  # (folder, precision or None)
    description: str = ""


LOADERS: dict[str, Loader] = {}


def register(loader: Loader) -> Loader:
    """Add (or replace) a loader; ``--runtime`` choices are the registry's keys plus ``auto``."""
    LOADERS[loader.name] = loader
    return loader


def _is_checkpoint(path: Path) -> bool:
    return (path / "checkpoint.json").is_file()


def _load_torch(path: Path, precision: str | None = None) -> Loaded:
    from ..checkpoint import load_checkpoint, load_model

    ckpt = load_checkpoint(path)
    if precision is not None:
        raise MhsaError(f"--precision is for export folders; {path} is a {ckpt.kind} checkpoint "
                        "(its precision is its own)")
    model = load_model(ckpt)  # float or int8 (real int8 kernels), eval mode, CPU

    @torch.inference_mode()
    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    return Loaded(forward, dict(ckpt.task_spec), ckpt.kind, "torch")


register(Loader("torch", _is_checkpoint, _load_torch, "mhsa checkpoint folder (float or int8), PyTorch eager"))


def _is_export(path: Path) -> bool:
    from ..runtimes.folder import is_export_folder

    return is_export_folder(path)


def _load_onnx(path: Path, precision: str | None = None) -> Loaded:
    """An ``mhsa export`` folder in ONNX Runtime (mhsa_cli.runtimes), fp32 or int8 (``precision``;
    default: the first the folder offers). Its export.json carries the source's task spec."""
    from ..runtimes import load_runtime
    from ..runtimes.folder import read_export_meta

    meta = read_export_meta(path)
    model = load_runtime("onnxruntime", path, precision=precision, threads=0)
    return Loaded(model.call, dict(meta["task"]), f"onnx {model.precision}", "onnxruntime")


register(Loader("onnxruntime", _is_export, _load_onnx, "mhsa export folder (ONNX fp32 / int8), ONNX Runtime"))


def runtime_names() -> list[str]:
    return ["auto", *LOADERS]


def load_for_predict(path: str | Path, runtime: str = "auto", precision: str | None = None) -> Loaded:
    """Load ``path`` with the named runtime, or the first that accepts it (``auto``).

    Raises:
        MhsaError: no such folder, no loader accepts it, or the named one does not.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise MhsaError(f"model folder {folder} not found (expected a checkpoint folder)")
    if runtime != "auto":
        if runtime not in LOADERS:
            raise MhsaError(f"unknown runtime '{runtime}'; choose from: {', '.join(runtime_names())}")
        if not LOADERS[runtime].detect(folder):
            raise MhsaError(f"{folder} is not a folder the '{runtime}' runtime loads")
        return LOADERS[runtime].load(folder, precision)
    for loader in LOADERS.values():
        if loader.detect(folder):
            return loader.load(folder, precision)
    if any(folder.glob("*.onnx")):
        raise MhsaError(f"{folder} holds ONNX files but no ONNX runtime is registered in this build")
    raise MhsaError(f"{folder} is not a checkpoint folder (no checkpoint.json)")
