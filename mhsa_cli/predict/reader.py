"""Streaming reader of the rows to predict: CSV / TSV / JSONL, the same formats and
column options as the ``text`` task, one row at a time (memory bounded); or one
split of an ``hf:`` data set (:mod:`mhsa_cli.tasks.hf_datasets`), read in batches.

:func:`scan` reads the file once before any prediction (counts rows; checks
utf-8, the text column and that no text is empty) so bad input fails before
anything is written; :func:`rows` then streams ``(line, text, label or None)``.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import MhsaError
from ..tasks import hf_datasets as hfd
from ..tasks.text_files import _format_of, _missing_column, data_file_error

Row = tuple[int, str, "str | None"]  # (line number, text, label or None)


@dataclass
class Source:
    """A file to predict and how to read it."""

    path: str
    format: str  # csv | tsv | jsonl (resolved) | hf
    text_column: str
    label_column: str
    has_labels: bool = False  # set by scan(): the label column is present
    rows: int = 0  # set by scan()
    split: str | None = None  # hf: the split read
    dataset: Any = None  # hf: that split (a datasets.Dataset)


def _open(path: str):
    try:
        return open(path, encoding="utf-8-sig", newline="", errors="strict")
    except OSError as exc:
        raise data_file_error(path, exc) from None


def _csv_rows(src: Source, fh) -> Iterator[Row]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(fh, delimiter="\t" if src.format == "tsv" else ",")
    columns = list(reader.fieldnames or [])
    if not columns:
        raise MhsaError(f"data file {src.path} is empty (no header, no rows)")
    if src.text_column not in columns:
        raise _missing_column(src.path, src.text_column, "text", columns)
    src.has_labels = src.label_column in columns
    try:
        for record in reader:
            label = record.get(src.label_column) if src.has_labels else None
            yield reader.line_num, record.get(src.text_column) or "", label
    except csv.Error as exc:
        raise MhsaError(f"{src.path} line {reader.line_num}: bad row: {exc}") from None


def _jsonl_rows(src: Source, fh) -> Iterator[Row]:
    first = True
    for num, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MhsaError(f"{src.path} line {num}: invalid JSON ({exc.msg}); expected one object per line") from None
        if not isinstance(obj, dict):
            raise MhsaError(f"{src.path} line {num}: expected a JSON object, got {type(obj).__name__}")
        if src.text_column not in obj:
            if first:
                raise _missing_column(src.path, src.text_column, "text", list(obj))
            raise MhsaError(f"{src.path} line {num}: no '{src.text_column}' field")
        if first:
            src.has_labels, first = src.label_column in obj, False
        label = obj.get(src.label_column) if src.has_labels else None
        text = obj[src.text_column]
        yield num, "" if text is None else str(text), None if label is None else str(label)


def _hf_rows(src: Source, _fh: Any = None) -> Iterator[Row]:
    label = src.label_column if src.has_labels else None
    for i, text, truth in hfd.stream(src.path, str(src.split), src.dataset, src.text_column, label):
        yield i, "" if text is None else str(text), truth


def rows(src: Source) -> Iterator[Row]:
    """Stream ``(line, text, label or None)``; labels only when the label column exists.

    Raises:
        MhsaError: unreadable file, not utf-8, no text column, malformed row, empty text.
    """
    if src.format == "hf":
        for line, text, label in _hf_rows(src):
            if not text.strip():
                raise MhsaError(f"{src.path} split '{src.split}' row {line}: empty text in column "
                                f"'{src.text_column}' (every row needs text to predict)")
            yield line, text, None if label is None else label.strip()
        return
    fh = _open(src.path)
    with fh:
        parse = _jsonl_rows if src.format == "jsonl" else _csv_rows
        line = 0
        try:
            for line, text, label in parse(src, fh):
                if not text.strip():
                    raise MhsaError(f"{src.path} line {line}: empty text in column '{src.text_column}' "
                                    "(every row needs text to predict)")
                yield line, text, None if label is None else label.strip()
        except UnicodeDecodeError:
            raise MhsaError(f"data file {src.path} is not valid utf-8 (after line {line})") from None


def scan(path: str, fmt: str, text_column: str, label_column: str, split: str | None = None) -> Source:
    """Check the whole file (or hf: split) and count its rows before any work.

    Raises:
        MhsaError: see :func:`rows`; also an empty file; ``split`` with a file.
    """
    if hfd.is_ref(path):
        name, dataset = hfd.open_split(path, split)
        src = Source(path, "hf", text_column, label_column, split=name, dataset=dataset,
                     has_labels=label_column in dataset.column_names)
        labelled = src.has_labels and any(label is not None for _, _, label in rows(src))
        src.has_labels = bool(labelled)  # an unlabelled split (ClassLabel -1 throughout) measures nothing
    elif split is not None:
        raise MhsaError("--split is for hf: data (--data hf:NAME); a file has no splits")
    else:
        src = Source(path, _format_of(path, fmt), text_column, label_column)
    src.rows = sum(1 for _ in rows(src))
    if not src.rows:
        raise MhsaError(f"data file {path} has no rows to predict")
    return src


def text_rows(texts: list[str]) -> Iterator[Row]:
    """Rows of ``--text`` values (numbered from 1).

    Raises:
        MhsaError: an empty text.
    """
    for i, text in enumerate(texts, start=1):
        if not str(text).strip():
            raise MhsaError(f"--text number {i} is empty")
        yield i, str(text), None


def options(values: dict[str, Any], spec: dict[str, Any]) -> tuple[str, str, str]:
    """(format, text column, label column): given values, else the checkpoint's columns
    and the format from the file's extension."""
    return (values.get("format") or "auto",
            values.get("text_column") or spec.get("text_column") or "text",
            values.get("label_column") or spec.get("label_column") or "label")
