"""The model ``mhsa predict`` runs: a folder loaded by a runtime of the one registry
(:mod:`mhsa_cli.runtimes`), named by ``--runtime`` or, with ``auto``, the first
whose ``detect`` accepts the folder (a checkpoint: ``torch``; an ``mhsa export``
folder: ``onnxruntime``). The :class:`~mhsa_cli.runtimes.Loaded` it returns
carries the call, the task spec (tokenizer, labels) and what was loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MhsaError
from ..runtimes import RUNTIMES, Loaded, get_runtime, load_runtime, runtime_for

AUTO = "auto"


def runtime_names() -> list[str]:
    """``--runtime`` choices of predict: ``auto`` and every registered runtime."""
    return [AUTO, *RUNTIMES]


def load_for_predict(path: str | Path, runtime: str = AUTO, precision: str | None = None) -> Loaded:
    """Load ``path`` with the named runtime, or the first that accepts it (``auto``).

    Args:
        path: a model folder (checkpoint or export folder).
        runtime: a registered runtime's name, or ``auto``.
        precision: fp32 or int8 (export folders), None for the folder's first.

    Returns:
        The :class:`~mhsa_cli.runtimes.Loaded` model, ``spec`` and ``kind`` filled in.

    Raises:
        MhsaError: no such folder, no runtime accepts it, the named one does not,
            or the runtime's own refusal (e.g. a precision the folder lacks).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise MhsaError(f"model folder {folder} not found (expected a checkpoint folder)")
    if runtime != AUTO:
        rt = get_runtime(runtime)
        if not rt.detect(folder):
            raise MhsaError(f"{folder} is not a folder the '{runtime}' runtime loads ({rt.description})")
    else:
        rt = runtime_for(folder)
        if rt is None:
            raise MhsaError(_no_runtime(folder))
    return load_runtime(rt.name, folder, precision, threads=0)


def _no_runtime(folder: Path) -> str:
    """Why no runtime accepts ``folder``, naming what each would need."""
    from ..runtimes.folder import META

    if any(folder.glob("*.onnx")):
        return (f"{folder} holds ONNX files but no {META}: not an export folder (make one with "
                "`mhsa export CKPT --out DIR`)")
    wanted = "; ".join(f"{rt.name}: {rt.description}" for rt in RUNTIMES.values())
    return f"{folder} is not a model folder any runtime loads ({wanted})"
