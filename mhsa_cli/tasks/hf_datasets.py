"""Hugging Face ``datasets`` as a text source, never from the network (the optional ``hf`` extra).

A data option ``hf:NAME[:CONFIG]`` names a Hub data set that is already in the
local ``datasets`` cache (``HF_DATASETS_CACHE``, under ``HF_HOME``); ``hf:FOLDER``
(a path: starts with ``/``, ``.`` or ``~``, or an existing folder) names a folder
written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a folder of
data files ``datasets`` reads itself (CSV, JSON, Parquet, ...). Loading runs in
offline mode (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` set for the call), and a
Hub name is looked up in the cache first, so a name that is not there fails
before ``datasets`` is asked anything.

:func:`read_rows` returns the rows of one split as the ``text`` task's
``(row, text, label)`` tuples (``row`` 0-based, rows with empty text skipped);
a ``ClassLabel`` label column gives the label names. Its digest is the sha256 of
those rows, so a rebuilt checkpoint notices changed data whatever the storage.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import MhsaError, cap

PREFIX = "hf:"
Row = tuple[int, str, str]  # (row index, text, label string)
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # written by save_to_disk
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass(frozen=True)
class Ref:
    """A parsed ``hf:`` reference."""

    text: str  # as given after normalising (``hf:`` + absolute folder, or ``hf:NAME[:CONFIG]``)
    name: str  # Hub name, or the absolute folder
    config: str | None
    folder: bool


def is_ref(value: Any) -> bool:
    """Whether a data setting names a Hugging Face data set (``hf:...``)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def parse(value: str) -> Ref:
    """Parse ``hf:NAME[:CONFIG]`` or ``hf:FOLDER``.

    Raises:
        MhsaError: nothing after ``hf:``.
    """
    body = value[len(PREFIX):].strip()
    if not body:
        raise MhsaError("hf: needs a data set name or folder, e.g. --data hf:ag_news or --data hf:./my_dataset")
    if body.startswith(("/", ".", "~")) or os.path.isdir(body):
        folder = os.path.abspath(os.path.expanduser(body))
        return Ref(PREFIX + folder, folder, None, True)
    name, _, config = body.partition(":")
    return Ref(PREFIX + body, name, config or None, False)


def normalise(value: str) -> str:
    """``value`` with a folder made absolute (so a spec rebuilds from anywhere)."""
    return parse(value).text


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise MhsaError("hf: data needs the 'datasets' package: pip install 'mhsa[hf]' (or pip install datasets)") from None
    return datasets


@contextlib.contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """Offline mode for the duration of the call: the environment and the flags already read at import."""
    import huggingface_hub.constants as hub

    saved_env = {k: os.environ.get(k) for k in OFFLINE_ENV}
    flags = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"), (hub, "HF_HUB_OFFLINE")]
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr in flags if hasattr(mod, attr)]
    verbosity = datasets.logging.get_verbosity()
    try:
        os.environ.update({k: "1" for k in OFFLINE_ENV})
        for mod, attr, _ in saved:
            setattr(mod, attr, True)
        datasets.logging.set_verbosity_error()  # "using the latest cached version ..." is expected here
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        for mod, attr, old in saved:
            setattr(mod, attr, old)
        for k, old in saved_env.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def _cache_root() -> Path:
    """``HF_DATASETS_CACHE`` as ``datasets`` would resolve it now (env first, then HF_HOME)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "datasets"


def _snake(name: str) -> str:
    """``datasets``' camelcase_to_snakecase (the cache folder of a data set)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


def cache_dir(ref: Ref) -> Path:
    """The folder under the cache that holds a Hub data set's prepared copies."""
    parts = ref.name.split("/")
    parts[-1] = _snake(parts[-1])
    return _cache_root() / "___".join(parts)


def _cached(ref: Ref) -> bool:
    root = cache_dir(ref)
    return any(os.path.isdir(p) for p in glob.glob(os.path.join(glob.escape(str(root)), "*", "*", "*")))


def _not_cached(ref: Ref) -> MhsaError:
    return MhsaError(f"hf data set '{cap(ref.name, 80)}' is not in the local cache ({_cache_root()}); mhsa never "
                     "downloads: load it once with the datasets library online, or save_to_disk it and "
                     "give --data hf:FOLDER")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return cap(text[0] if text else type(exc).__name__, 160)


def load(value: str) -> dict[str, Any]:
    """Every split of an ``hf:`` data set, offline.

    Returns:
        split name -> ``datasets.Dataset`` (a single saved ``Dataset`` is split ``train``).

    Raises:
        MhsaError: ``datasets`` missing, folder missing, Hub name not cached, unreadable data.
    """
    ref = parse(value)
    if ref.folder and not os.path.isdir(ref.name):
        raise MhsaError(f"hf data set folder {ref.name} not found")
    if not ref.folder and ref.name.count("/") > 1:
        raise MhsaError(f"hf data set name '{cap(ref.name, 80)}' is neither NAME nor OWNER/NAME "
                        "(a folder? start it with / or ./)")
    if not ref.folder and not _cached(ref):
        raise _not_cached(ref)
    ds = _datasets()
    try:
        with _offline(ds):
            if ref.folder and any(os.path.isfile(os.path.join(ref.name, m)) for m in SAVED_MARKERS):
                obj = ds.load_from_disk(ref.name)
            elif ref.folder:
                obj = ds.load_dataset(ref.name, cache_dir=str(_cache_root()))
            else:  # the cache folder checked above, whatever datasets read at import
                obj = ds.load_dataset(ref.name, ref.config, cache_dir=str(_cache_root()),
                                      download_mode="reuse_dataset_if_exists")
    except MhsaError:
        raise
    except (ConnectionError, OSError) as exc:
        if not ref.folder:
            raise _not_cached(ref) from None
        raise MhsaError(f"cannot read hf data set {ref.text}: {_one_line(exc)}") from None
    except Exception as exc:  # datasets raises ValueError, DatasetNotFoundError, ... with long texts
        raise MhsaError(f"cannot load hf data set {ref.text}: {_one_line(exc)}") from None
    if isinstance(obj, ds.Dataset):
        return {"train": obj}
    return dict(obj)


def _label_names(feature: Any, datasets: Any) -> list[str] | None:
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _check_columns(where: str, dataset: Any, text_col: str, label_col: str, datasets: Any) -> None:
    columns = list(dataset.column_names)
    for col, kind in ((text_col, "text"), (label_col, "label")):
        if col not in columns:
            raise MhsaError(f"{where} has no {kind} column '{cap(col, 80)}'; columns: "
                            f"{cap(', '.join(repr(c) for c in columns) or 'none')} (set {kind}_column=...)")
    feature = dataset.features[text_col]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise MhsaError(f"{where}: text column '{text_col}' holds {cap(str(feature), 60)}, not strings "
                        "(set text_column=...)")


def read_rows(value: str, split: str, text_col: str, label_col: str) -> tuple[list[Row], str]:
    """The labelled rows of one split of an ``hf:`` data set.

    Args:
        value: ``hf:NAME[:CONFIG]`` or ``hf:FOLDER``.
        split: split name, e.g. ``train``.
        text_col: text column (strings).
        label_col: label column: a ``ClassLabel`` (ids -> names), strings or numbers.

    Returns:
        ``(rows, sha256 of the rows)``; rows with empty text are skipped.

    Raises:
        MhsaError: see :func:`load`; unknown split, missing column, a non-text column,
            a missing label (e.g. -1 in an unlabelled test split), no rows with text.
    """
    splits = load(value)
    where = f"{value} split '{split}'"
    if split not in splits:
        raise MhsaError(f"{value} has no split '{cap(split, 60)}'; splits: {', '.join(splits) or 'none'}")
    ds, dataset = _datasets(), splits[split]
    _check_columns(where, dataset, text_col, label_col, ds)
    names = _label_names(dataset.features[label_col], ds)
    table = dataset.select_columns([text_col, label_col]).to_dict()  # {column: [values]}
    rows: list[Row] = []
    for i, (text, label) in enumerate(zip(table[text_col], table[label_col])):
        if text is None or not str(text).strip():
            continue
        if names is not None:
            if label is None or not 0 <= int(label) < len(names):
                raise MhsaError(f"{where} row {i}: label {label} is not one of the {len(names)} classes "
                                "(an unlabelled split?)")
            label = names[int(label)]
        elif label is None or isinstance(label, (dict, list)) or not str(label).strip():
            raise MhsaError(f"{where} row {i}: label must be a non-empty string or number")
        rows.append((i, str(text), str(label).strip()))
    if not rows:
        raise MhsaError(f"{where} has no rows with text")
    return rows, hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def content_sha256(value: str) -> str:
    """A stable hash of an ``hf:`` data set's stored form (for recipe stage hashes): a folder's files
    (paths and bytes), or a cached Hub data set's prepared copies (paths and ``dataset_info.json``,
    whose folder names carry ``datasets``' own fingerprints).

    Raises:
        MhsaError: folder missing, or the Hub name not cached.
    """
    ref = parse(value)
    if ref.folder and not os.path.isdir(ref.name):
        raise MhsaError(f"hf data set folder {ref.name} not found")
    if not ref.folder and not _cached(ref):
        raise _not_cached(ref)
    root = Path(ref.name) if ref.folder else cache_dir(ref)
    h = hashlib.sha256(f"{ref.config}".encode())
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
        rel = f.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        if ref.folder or f.name == "dataset_info.json":
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def open_split(value: str, split: str | None) -> tuple[str, Any]:
    """One split of an ``hf:`` data set for prediction: ``split``, else the only split, else ``test``.

    Returns:
        ``(split name, datasets.Dataset)``.

    Raises:
        MhsaError: see :func:`load`; unknown split, or several splits and none named.
    """
    splits = load(value)
    if split is None:
        split = next(iter(splits)) if len(splits) == 1 else "test" if "test" in splits else None
        if split is None:
            raise MhsaError(f"{value} has splits {', '.join(splits)}: say which with --split")
    if split not in splits:
        raise MhsaError(f"{value} has no split '{cap(split, 60)}'; splits: {', '.join(splits) or 'none'}")
    return split, splits[split]


def stream(value: str, split: str, dataset: Any, text_col: str, label_col: str | None,
           batch: int = 1024) -> Iterator[tuple[int, str | None, str | None]]:
    """``(row, text, label or None)`` of a split, ``batch`` rows at a time (memory bounded);
    a ``ClassLabel`` id becomes its name, -1 (unlabelled) None.

    Raises:
        MhsaError: the text column is missing or not strings.
    """
    ds = _datasets()
    where = f"{value} split '{split}'"
    if text_col not in dataset.column_names:
        raise MhsaError(f"{where} has no text column '{cap(text_col, 80)}'; columns: "
                        f"{cap(', '.join(repr(c) for c in dataset.column_names))} (set --text-column)")
    _check_columns(where, dataset, text_col, text_col, ds)
    names = _label_names(dataset.features[label_col], ds) if label_col else None
    cols = [text_col] + ([label_col] if label_col else [])
    part = dataset.select_columns(cols)
    for start in range(0, len(part), batch):
        chunk = part[start:start + batch]  # {column: [values]}
        labels = chunk[label_col] if label_col else [None] * len(chunk[text_col])
        for i, (text, label) in enumerate(zip(chunk[text_col], labels), start=start):
            if names is not None and label is not None:
                label = names[int(label)] if 0 <= int(label) < len(names) else None
            yield i, text, None if label is None else str(label)
