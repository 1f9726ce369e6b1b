"""Runtimes: the one registry of what runs a model, looked up by name by ``mhsa bench
--runtime``, ``mhsa predict --runtime``, export's checks and recipes.

A runtime turns a checkpoint or an export folder into ``x -> logits``. The interface
is deliberately small::

    from mhsa_cli.runtimes import load_runtime
    m = load_runtime("onnxruntime", "runs/export", precision="int8", threads=1)
    logits = m.call(x)          # x: CPU tensor (B, T) int64 ids or (B, T, F) float32
    m.runtime, m.precision, m.threads, m.details   # what ran, recorded beside every number
    m.spec, m.kind              # the task spec (tokenizer, labels) and what was loaded

* ``torch``: eager PyTorch; loads a checkpoint folder (float or torch-int8, its
  own precision); ``call`` is the ``nn.Module`` itself.
* ``onnxruntime``: ONNX Runtime; loads an export folder (``mhsa export``) at
  precision ``fp32`` (``model.onnx``) or ``int8`` (``model.int8.onnx``), on
  the CPU provider or, with ``device="cuda"``, the CUDA provider when this ORT
  build has it. ``call`` returns a torch tensor, so accuracy and the timer
  treat both runtimes alike.

Each :class:`Runtime` says which folders are its own (:attr:`Runtime.detect`:
``mhsa predict --runtime auto`` takes the first that accepts a folder), what it
reads (:attr:`Runtime.reads`: ``checkpoint`` folders as they are, or ``export``
folders that bench makes from a float checkpoint), which precisions it can run
from a folder (:attr:`Runtime.precisions`) and why a device is unavailable
(:attr:`Runtime.unavailable`).

A new runtime is one module that calls :func:`register` plus one entry in
:data:`RUNTIME_MODULES` (the table order); bench and predict offer it from there.
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
    # provider, file, graph optimisation, ...; "providers": what a session took, "fell_back": why it does
    # not run on the device asked for (e.g. ORT without a working CUDA provider), absent when it does
    details: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # the task spec: tokenizer, max_len, labels, columns
    kind: str = ""  # what was loaded, for tables: float | int8 (checkpoints), onnx fp32 | onnx int8


@dataclass
class Runtime:
    """A registry entry.

    ``load(path, precision, threads, device) -> Loaded``; ``precisions(path)``
    lists what it can run from that folder (empty: nothing); ``unavailable(device,
    precision)`` is None or the reason it cannot run there; ``detect(path)`` says
    whether a folder is this runtime's own kind (without raising); ``reads`` is
    ``checkpoint`` or ``export``.
    """

    name: str
    description: str
    load: Callable[..., Loaded]
    precisions: Callable[[Path], list[str]]
    unavailable: Callable[[str, str], str | None]
    versions: Callable[[], dict[str, str | None]]
    detect: Callable[[Path], bool]
    reads: str = "checkpoint"


RUNTIMES: dict[str, Runtime] = {}
READS = ("checkpoint", "export")
RUNTIME_MODULES = ("torch_eager", "onnxruntime")  # built-in runtimes, in table order


def register(runtime: Runtime) -> Runtime:
    """Add (or replace) a runtime; bench's and predict's ``--runtime`` choices are the registry's keys."""
    if runtime.reads not in READS:
        raise ValueError(f"runtime {runtime.name}: reads must be one of {READS}, not {runtime.reads!r}")
    RUNTIMES[runtime.name] = runtime
    return runtime


def unregister(name: str) -> None:
    """Remove a runtime (tests that register a fake one)."""
    RUNTIMES.pop(name, None)


def runtime_for(path: str | Path) -> Runtime | None:
    """The first runtime whose ``detect`` accepts the folder ``path``, or None."""
    return next((rt for rt in RUNTIMES.values() if rt.detect(Path(path))), None)


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


def _register_builtins() -> None:
    import importlib

    for module in RUNTIME_MODULES:
        importlib.import_module(f"{__name__}.{module}")


_register_builtins()
