"""Writing output folders safely: check them before work, write atomically, never lose the old one.

Writing is atomic: everything goes to a hidden temporary folder beside the
target, which is renamed into place at the end. An existing folder is only
replaced with ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import MhsaError


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
    real = resolve_path(out, "output path")
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
        inp = resolve_path(path, "input")
        if real == inp or real in inp.parents:
            what = "is" if real == inp else "contains"
            raise MhsaError(f"output folder {out} {what} the input {path}; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise MhsaError(f"output folder {out} already exists; pass --force to replace it")
    return out


def resolve_path(path: str | Path, what: str = "path") -> Path:
    """``path`` made absolute with symlinks followed.

    Raises:
        MhsaError: a symlink loop on the way (``what`` names the path's role in the line).
    """
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # a symlink loop (Python < 3.13: RuntimeError)
        raise MhsaError(f"{what} {path} goes through a symlink loop") from None


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


def write_files(folder: Path, files: dict[str, Any]) -> None:
    """Write ``files`` (name -> str or bytes, written as is, or a JSON-able object) into ``folder``."""
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        elif isinstance(content, str):
            (folder / name).write_text(content, encoding="utf-8")
        else:
            _write_json(folder / name, content)
