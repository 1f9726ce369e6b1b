"""The rows to predict: a CSV / TSV / JSONL file read by the one text reader
(:class:`mhsa_cli.tasks.text_files.TextRows`, streamed, the same errors as
training), ``--text`` values, or one split of an ``hf:`` data set
(:mod:`mhsa_cli.tasks.hf_datasets`), read in batches.

:func:`scan` reads the file once before any prediction (counts rows; checks
utf-8, the header, every row's field count and that no text is empty) so bad
input fails before anything is written; :func:`rows` then streams
``(line, text, label or None)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import MhsaError
from ..tasks import hf_datasets as hfd
from ..tasks.text_files import Row, TextRows


@dataclass
class Source:
    """A file (or hf: split) to predict and how to read it."""

    path: str
    format: str  # csv | tsv | jsonl (resolved) | hf
    text_column: str
    label_column: str
    has_labels: bool = False  # set by scan(): the label column is present
    rows: int = 0  # set by scan()
    split: str | None = None  # hf: the split read
    dataset: Any = None  # hf: that split (a datasets.Dataset)
    reader: TextRows | None = None  # a file's reader


def _hf_rows(src: Source) -> Iterator[Row]:
    label = src.label_column if src.has_labels else None
    for i, text, truth in hfd.stream(src.path, str(src.split), src.dataset, src.text_column, label):
        text = "" if text is None else str(text)
        if not text.strip():
            raise MhsaError(f"{src.path} split '{src.split}' row {i}: empty text in column "
                            f"'{src.text_column}' (every row needs text)")
        yield i, text, None if truth is None else truth.strip()


def rows(src: Source) -> Iterator[Row]:
    """Stream ``(line, text, label or None)``; labels only when the label column exists.

    Raises:
        MhsaError: unreadable file, not utf-8, no text column, a malformed row
            (e.g. more fields than the header), an empty text; each names its line.
    """
    if src.reader is None:
        yield from _hf_rows(src)
        return
    yield from src.reader
    src.has_labels = bool(src.reader.has_labels)


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
        reader = TextRows(path, fmt, text_column, label_column, label="optional", empty_text="error")
        src = Source(path, reader.format, text_column, label_column, reader=reader)
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
