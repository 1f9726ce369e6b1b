"""Runtimes: name -> a loader that turns a checkpoint or export folder into ``x -> logits``.

A runtime is a registry entry (:data:`RUNTIMES`), looked up by name by
``mhsa bench --runtime``, recipes and (later) ``mhsa predict``. The interface is
deliberately small::

    from mhsa_cli.runtimes import load_runtime
    m = load_runtime("onnxruntime", "runs/export", precision="int8", threads=1)
    logits = m.call(x)          # x: CPU tensor (B, T) int64 ids or (B, T, F) float32
    m.runtime, m.precision, m.threads, m.details   # what ran, recorded beside every number

* ``torch``: eager PyTorch; loads a checkpoint folder (float or torch-int8, its
  own precision); ``call`` is the ``nn.Module`` itself.
* ``onnxruntime``: ONNX Runtime; loads an export folder (``mhsa export``) at
  precision ``fp32`` (``model.onnx``) or ``int8`` (``model.int8.onnx``), on
  the CPU provider or, with ``device="cuda"``, the CUDA provider when this ORT
  build has it. ``call`` returns a torch tensor, so accuracy and the timer
  treat both runtimes alike.

Each :class:`Runtime` says which precisions it can run from a folder
(:meth:`Runtime.precisions`) and why a device is unavailable
(:meth:`Runtime.unavailable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import MhsaError, choice


@dataclass
class Loaded:
    """A model ready to run: ``call(x) -> logits`` and what runs it."""

    call: Callable[[torch.Tensor], torch.Tensor]
    runtime: str  # registry name
    precision: str  # fp32 | int8
    threads: int  # intra-op threads it runs with
    source: str  # the folder loaded
    details: dict[str, Any] = field(default_factory=dict)  # provider, file, graph optimisation, ...


@dataclass
class Runtime:
    """A registry entry.

    ``load(path, precision, threads, device) -> Loaded``; ``precisions(path)``
    lists what it can run from that folder (empty: nothing); ``unavailable(device,
    precision)`` is None or the reason it cannot run there.
    """

    name: str
    description: str
    load: Callable[..., Loaded]
    precisions: Callable[[Path], list[str]]
    unavailable: Callable[[str, str], str | None]
    versions: Callable[[], dict[str, str | None]]


RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    RUNTIMES[runtime.name] = runtime
    return runtime


def runtime_names() -> list[str]:
    """Registered runtime names (CLI / recipe choices)."""
    return list(RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``.

    Raises:
        MhsaError: unknown name (the valid names and the closest one given).
    """
    return RUNTIMES[choice("runtime", name, RUNTIMES)]


def load_runtime(name: str, path: str | Path, precision: str | None = None, threads: int = 0,
                 device: str = "cpu") -> Loaded:
    """Load ``path`` (checkpoint or export folder) in runtime ``name``.

    Args:
        name: a key of :data:`RUNTIMES`.
        path: what the runtime loads (see the module docstring).
        precision: fp32 or int8 (default: the first the folder offers).
        threads: intra-op threads (0 = torch's current count, so runtimes match).
        device: cpu or cuda.

    Returns:
        :class:`Loaded`.

    Raises:
        MhsaError: unknown runtime, a folder it cannot load, a precision the
            folder lacks, a device it cannot use here.
    """
    rt = get_runtime(name)
    offered = rt.precisions(Path(path))
    if not offered:
        raise MhsaError(f"runtime {name} cannot load {path}")
    precision = precision or offered[0]
    reason = rt.unavailable(device, precision)
    if reason:
        raise MhsaError(f"runtime {name} cannot run {precision} on {device}: {reason}")
    return rt.load(Path(path), precision, threads or torch.get_num_threads(), device)


@torch.inference_mode()
def predictions(call: Callable[[torch.Tensor], torch.Tensor], split: Any, batch_size: int = 256) -> torch.Tensor:
    """Predicted class ids (N,) of ``call`` (any runtime's ``x -> logits``) on a task split, in batches.

    An ``nn.Module`` is put in eval mode (its mode restored after).
    """
    was = getattr(call, "training", None)
    if was is not None:
        call.eval()  # type: ignore[attr-defined]
    preds = [call(split.x[i: i + batch_size]).argmax(-1) for i in range(0, len(split), batch_size)]
    if was:
        call.train(was)  # type: ignore[attr-defined]
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def accuracy(call: Callable[[torch.Tensor], torch.Tensor], split: Any, batch_size: int = 256) -> float:
    """Accuracy of ``call`` on a task split (see :func:`predictions`)."""
    return int((predictions(call, split, batch_size) == split.y).sum()) / max(len(split), 1)


from . import onnxruntime as _ort  # noqa: E402,F401  (registration)
from . import torch_eager as _torch  # noqa: E402,F401

RUNTIMES = {"torch": RUNTIMES["torch"], "onnxruntime": RUNTIMES["onnxruntime"]}  # table order
