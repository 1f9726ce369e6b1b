"""The ``torch`` runtime: a checkpoint's own model in eager PyTorch (float or torch-int8)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MhsaError
from . import Loaded, Runtime, register


def _kind(path: Path) -> str | None:
    """The checkpoint's kind from its JSON (float, int8, ...), None when it is no checkpoint."""
    import json

    from ..checkpoint import META

    try:  # the JSON says the kind; load_model checks the rest
        kind = json.loads((path / META).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return str(kind)


def _precisions(path: Path) -> list[str]:
    kind = _kind(path)
    return [] if kind is None else ["int8" if kind == "int8" else "fp32"]


def _detect(path: Path) -> bool:
    from ..checkpoint import META

    return (path / META).is_file()


def _load(path: Path, precision: str, threads: int, device: str) -> Loaded:
    """The checkpoint's model in eval mode on ``device`` (its own precision only).

    Raises:
        MhsaError: another precision than the checkpoint's; a corrupt checkpoint.
    """
    from ..checkpoint import load_checkpoint, load_model

    own = _precisions(path)
    if precision not in own:
        raise MhsaError(f"{path} is a {_kind(path)} checkpoint, run at its own precision ({', '.join(own)}); "
                        "--precision is for export folders")
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(path)
    model = load_model(ckpt).to(device)
    return Loaded(model, "torch", precision, threads, str(path), {"device": device, "mode": "eager"},
                  dict(ckpt.task_spec), ckpt.kind)


def _unavailable(device: str, precision: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU here"
    if device == "cuda" and precision == "int8":
        return "torch dynamic int8 kernels exist for the CPU only"
    return None


register(Runtime("torch", "mhsa checkpoint folder (float or int8), eager PyTorch", _load, _precisions,
                 _unavailable, lambda: {"torch": torch.__version__}, _detect, "checkpoint"))
