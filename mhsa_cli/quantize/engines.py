"""Quantized engines: which kernels int8 weights are packed for, and ``--engine auto``.

:data:`ENGINES` lists the engines; :func:`resolve_engine` turns ``--engine`` into
one supported on this machine (``auto``: the first of :data:`AUTO_ORDER` for
this CPU family); :func:`engine_here` picks the engine to rebuild a stored
checkpoint with. :func:`use_engine` sets the engine for a block and
:func:`quiet` (from :mod:`.torch_private`) hides torch's known ``torch.ao.quantization`` notices only.
"""

from __future__ import annotations

import platform
from contextlib import contextmanager
from typing import Iterator

import torch

from ..errors import MhsaError, choice, warn
from .torch_private import quiet  # noqa: F401  (re-exported: its home is the private-API module)

# Engine -> what it is. "auto" is resolved by :func:`resolve_engine`.
ENGINES: dict[str, str] = {
    "auto": "the fastest engine supported on this CPU (x86 > fbgemm > onednn; qnnpack on ARM)",
    "x86": "x86 CPUs: picks fbgemm or oneDNN kernels per layer (torch's default on x86)",
    "fbgemm": "x86 CPUs with AVX2 / AVX-512 (VNNI)",
    "onednn": "oneDNN kernels (x86 and ARM)",
    "qnnpack": "ARM / mobile; much slower than fbgemm on x86",
}
# Preference of "auto" per CPU family: a rule, checked by benchmarks/quantize_targets.py.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "x86": ("x86", "fbgemm", "onednn", "qnnpack"),
    "arm": ("qnnpack", "onednn", "x86", "fbgemm"),
}
_CPU_FAMILY = {"x86_64": "x86", "amd64": "x86", "i386": "x86", "i686": "x86",
               "aarch64": "arm", "arm64": "arm", "armv7l": "arm"}


@contextmanager
def use_engine(engine: str) -> Iterator[None]:
    """Set ``torch.backends.quantized.engine`` for the block (weights are packed for it)."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def supported_engines() -> list[str]:
    """Quantized engines this torch build supports on this machine (no "none")."""
    return [e for e in torch.backends.quantized.supported_engines if e in ENGINES and e != "auto"]


def cpu_family() -> str:
    """"x86" or "arm" (anything else is treated as x86)."""
    return _CPU_FAMILY.get(platform.machine().lower(), "x86")


def resolve_engine(name: str) -> str:
    """Turn ``--engine`` into a concrete engine supported here.

    Args:
        name: a key of :data:`ENGINES`; ``auto`` takes the first supported engine
            of :data:`AUTO_ORDER` for this CPU family (on x86 qnnpack comes last:
            it is several times slower there).

    Returns:
        The engine name.

    Raises:
        MhsaError: unknown engine, or one this machine does not support.
    """
    choice("quantized engine", name, ENGINES)
    supported = supported_engines()
    if name == "auto":
        for engine in AUTO_ORDER[cpu_family()]:
            if engine in supported:
                return engine
        raise MhsaError(f"this torch build has no quantized engine (torch {torch.__version__})")
    if name not in supported:
        raise MhsaError(f"quantized engine '{name}' is not supported on this machine "
                        f"(supported: {', '.join(supported) or 'none'}); use --engine auto")
    return name


def engine_here(recorded: str) -> str:
    """The engine to pack a stored checkpoint's weights for on this machine: the
    ``recorded`` one if supported here, else what ``auto`` resolves to.

    The stored int8 weights, scales and zero points are engine-independent, but
    the outputs are not bit-identical across engines: each engine quantizes the
    activations and rounds on its own (measured: x86 vs onednn on an AVX2 CPU
    moved a small model's logits by 0.015, about one activation quantum per
    layer). A fallback is therefore announced (:func:`~mhsa_cli.errors.warn`)
    and recorded by the caller; accuracy must be re-measured, not copied.
    """
    if recorded in supported_engines():
        return recorded
    here = resolve_engine("auto")
    warn(f"int8 weights were packed for quantized engine '{recorded}', which this machine "
         f"does not support; using '{here}' (outputs differ slightly; accuracy is re-measured)")
    return here
