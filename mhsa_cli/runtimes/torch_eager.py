"""The ``torch`` runtime: a checkpoint's own model in eager PyTorch (float or torch-int8)."""

from __future__ import annotations

from pathlib import Path

import torch

from . import Loaded, Runtime, register


def _precisions(path: Path) -> list[str]:
    import json

    from ..checkpoint import META

    try:  # the JSON says the kind; load_model checks the rest
        kind = json.loads((path / META).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return []
    return ["int8" if kind == "int8" else "fp32"]


def _load(path: Path, precision: str, threads: int, device: str) -> Loaded:
    from ..checkpoint import load_model

    torch.set_num_threads(threads)
    model = load_model(path).to(device)
    return Loaded(model, "torch", precision, threads, str(path), {"device": device, "mode": "eager"})


def _unavailable(device: str, precision: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU here"
    if device == "cuda" and precision == "int8":
        return "torch dynamic int8 kernels exist for the CPU only"
    return None


register(Runtime("torch", "eager PyTorch (the checkpoint's own model)", _load, _precisions, _unavailable,
                 lambda: {"torch": torch.__version__}))
