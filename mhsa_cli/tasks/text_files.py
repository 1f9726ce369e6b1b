"""The one reader of text data files: CSV / TSV / JSONL, streamed, as (line, text, label) rows.

Training (:func:`read_rows`), ``mhsa predict`` (:mod:`mhsa_cli.predict.reader`),
``mhsa import --data`` and recipes all read files through :class:`TextRows`, so
one file is read one way everywhere, with the same errors. Rows are parsed with
the ``csv`` / ``json`` modules (quoted fields, embedded commas and newlines,
utf-8 with optional BOM) from a stream of lines (memory bounded); every problem
is one line that names the file and the line. A CSV row with more or fewer
fields than the header is refused (an unquoted comma in a one-column file is
not silently cut at the comma)::

    rows = TextRows("reviews.csv", label="optional", empty_text="error")
    for line, text, label in rows: ...      # label None without a label column
    rows.has_labels, rows.sha256            # known after the header / the whole file
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from typing import Any, Iterator

from ..errors import MhsaError, cap

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
Row = tuple[int, str, "str | None"]  # (line number, text, label string or None)
LONE_CR = re.compile(r"(?<=\r)(?!\n)")  # old Mac line ends: csv sees them as line breaks, as text mode would
LABELS = ("required", "optional")
EMPTY_TEXT = ("skip", "error")


def data_file_error(path: str, exc: OSError) -> MhsaError:
    """The one-line error for a data file that cannot be opened or read.

    Args:
        path: the data file as the user named it.
        exc: what ``open`` or the read raised.

    Returns:
        The error to raise (``from None``): not found, a directory, or the OS's reason.
    """
    if isinstance(exc, FileNotFoundError):
        return MhsaError(f"data file {path} not found")
    if isinstance(exc, IsADirectoryError):
        return MhsaError(f"data file {path} is a directory, not a file")
    return MhsaError(f"cannot read data file {path}: {exc.strerror or exc}")


def open_binary(path: str):
    """``path`` opened for reading bytes.

    Raises:
        MhsaError: not found, a directory, or unreadable (:func:`data_file_error`).
    """
    try:
        return open(path, "rb")
    except OSError as exc:
        raise data_file_error(path, exc) from None


def _lines(path: str, digest: Any) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its ending) of ``path``, split at ``\\n``;
    every byte read goes into ``digest``; a leading BOM is dropped.

    Raises:
        MhsaError: unreadable, or not utf-8 (the line and the file's byte offset named).
    """
    offset = 0
    with open_binary(path) as fh:
        for num, raw in enumerate(fh, start=1):
            digest.update(raw)
            try:
                yield num, raw.decode("utf-8-sig" if num == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise MhsaError(f"data file {path} is not valid utf-8 (line {num}, byte "
                                f"{offset + exc.start})") from None
            offset += len(raw)


def _format_of(path: str, fmt: str) -> str:
    """Resolve format ``auto`` from the file extension."""
    if fmt != "auto":
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise MhsaError(f"cannot tell the format of {path} from its extension '{ext}'; "
                        "use format=csv, tsv or jsonl")
    return EXTENSIONS[ext]


def _missing_column(path: str, column: str, kind: str, columns: list[str]) -> MhsaError:
    shown = cap(", ".join(repr(c) for c in columns) or "none")  # a 5 MB header is not quoted whole
    return MhsaError(f"{path} has no {kind} column '{cap(column, 80)}'; columns: {shown} "
                     f"(set {kind}_column=...)")


class _Tracked:
    """The lines fed to ``csv.reader``, remembering those of the record being read (its first
    line is where an error points: where an unclosed quote opened, not where the file ended)."""

    def __init__(self, lines: Iterator[tuple[int, str]]):
        self._lines, self._parts = lines, iter(())
        self.record: list[tuple[int, str]] = []  # (line number, text) of the current record
        self.num = 0

    def __iter__(self) -> "_Tracked":
        return self

    def __next__(self) -> str:
        part = next(self._parts, None)
        while part is None:
            self.num, line = next(self._lines)  # StopIteration ends the csv reader
            self._parts = iter([x for x in LONE_CR.split(line) if x])
            part = next(self._parts, None)
        self.record.append((self.num, part))
        return part

    def start(self) -> int:
        """First non-blank line of the current record (its last line if all are blank)."""
        return next((n for n, t in self.record if t.strip()), self.num)


def _field_count_error(path: str, got: int, width: int, tracked: _Tracked, delimiter: str) -> MhsaError:
    """A row with more or fewer fields than the header (it would make a phantom class or column,
    or cut a text at an unquoted comma)."""
    start, end = tracked.start(), tracked.num
    first = next((t for n, t in tracked.record if n == start), "")
    if got < width and end > start and '"' in first:  # ran on to the end of the file
        return MhsaError(f"{path} line {start}: a quote opened here is never closed (the field runs on "
                         f"to line {end})")
    hint = f"an unquoted {delimiter!r} in a text? quote the field" if got > width else "fields missing"
    return MhsaError(f"{path} line {start}: {got} field{'s' * (got != 1)}, the header has {width} ({hint})")


class TextRows:
    """One CSV / TSV / JSONL data file, streamed as ``(line, text, label or None)`` rows.

    Args:
        path: the data file.
        fmt: csv, tsv, jsonl or auto (from the extension).
        text_column: the column / JSON field holding the text.
        label_column: the column / field holding the label.
        label: ``required`` (training: the column must exist and no label be empty)
            or ``optional`` (predict: labels when the header / first object has the
            column, else None; :attr:`has_labels` says which).
        empty_text: ``skip`` rows whose text is empty (training) or ``error`` (predict).

    Iterating reads the file again each time. After a full pass, :attr:`sha256` is
    the file's digest.

    Raises:
        MhsaError (while iterating): unreadable file, not utf-8, no header, a missing
            column, a row with the wrong number of fields, bad JSON, an empty text
            (``empty_text="error"``), an empty label (``label="required"``); each
            names the file and the line.
    """

    def __init__(self, path: str, fmt: str = "auto", text_column: str = "text", label_column: str = "label",
                 label: str = "required", empty_text: str = "skip"):
        assert label in LABELS and empty_text in EMPTY_TEXT, (label, empty_text)
        self.path, self.format = str(path), _format_of(str(path), fmt)
        self.text_column, self.label_column = text_column, label_column
        self.need_label, self.skip_empty = label == "required", empty_text == "skip"
        self.has_labels: bool | None = None  # known once the header / first object is read
        self.sha256: str | None = None

    def __iter__(self) -> Iterator[Row]:
        digest = hashlib.sha256()
        self.sha256 = None
        parse = self._jsonl if self.format == "jsonl" else self._csv
        for line, text, label in parse(_lines(self.path, digest)):
            text = "" if text is None else str(text)
            if not text.strip():
                if self.skip_empty:
                    continue
                raise MhsaError(f"{self.path} line {line}: empty text in column '{self.text_column}' "
                                "(every row needs text)")
            yield line, text, self._label(line, label)
        self.sha256 = digest.hexdigest()

    def _label(self, line: int, label: Any) -> str | None:
        if not self.has_labels or (label is None and not self.need_label):
            return None
        if label is None or isinstance(label, (dict, list)) or not str(label).strip():
            if self.need_label:
                raise MhsaError(f"{self.path} line {line}: empty label" + (
                    "" if self.format != "jsonl" else " (a label must be a non-empty string or number)"))
            return ""
        return str(label).strip()

    def _columns(self, columns: list[str]) -> None:
        """Check the header (or the first object's keys) and note whether labels exist."""
        for col, kind in ((self.text_column, "text"), (self.label_column, "label")):
            if col not in columns and (kind == "text" or self.need_label):
                raise _missing_column(self.path, col, kind, columns)
        self.has_labels = self.label_column in columns

    def _csv(self, lines: Iterator[tuple[int, str]]) -> Iterator[Row]:
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        delimiter = "\t" if self.format == "tsv" else ","
        tracked = _Tracked(lines)
        reader = csv.reader(tracked, delimiter=delimiter)
        try:
            columns = next(reader, [])
            if not columns:
                raise MhsaError(f"data file {self.path} is empty (no header, no rows)")
            self._columns(columns)
            text_at = columns.index(self.text_column)
            label_at = columns.index(self.label_column) if self.has_labels else None
            while True:
                tracked.record = []
                row = next(reader, None)
                if row is None:
                    return
                if not row:  # a blank line
                    continue
                if len(row) != len(columns):
                    raise _field_count_error(self.path, len(row), len(columns), tracked, delimiter)
                yield tracked.start(), row[text_at], None if label_at is None else row[label_at]
        except csv.Error as exc:
            why = "a quote opened here is never closed" if "end of data" in str(exc) else cap(str(exc), 120)
            raise MhsaError(f"{self.path} line {tracked.start()}: bad {delimiter!r}-separated row: {why}") from None

    def _jsonl(self, lines: Iterator[tuple[int, str]]) -> Iterator[Row]:
        seen: dict[str, None] = {}  # keys seen so far, in order, for error messages
        given = 0  # rows yielded so far
        for num, line in lines:
            if not line.strip():
                continue
            obj = self._json_object(num, line)
            seen.update(dict.fromkeys(obj))
            if not given:
                self._columns(list(seen))
            for col in (self.text_column, self.label_column if self.need_label else None):
                if col is not None and col not in obj:
                    raise MhsaError(f"{self.path} line {num}: no '{col}' field")
            text = obj[self.text_column]
            if not self.skip_empty or (text is not None and str(text).strip()):
                given += 1
            yield num, text, obj.get(self.label_column)

    def _json_object(self, num: int, line: str) -> dict[str, Any]:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MhsaError(f"{self.path} line {num}: invalid JSON ({exc.msg}, column {exc.colno}); "
                            "expected one JSON object per line") from None
        except RecursionError:
            raise MhsaError(f"{self.path} line {num}: JSON nested too deeply; expected one flat object "
                            "per line") from None
        if not isinstance(obj, dict):
            raise MhsaError(f"{self.path} line {num}: expected a JSON object, got {type(obj).__name__}")
        return obj


def read_rows(path: str, opts: dict[str, Any]) -> tuple[list[tuple[int, str, str]], str]:
    """All rows of one training data file (labels required, empty texts skipped).

    Args:
        path: the data file.
        opts: the ``text`` task's options (``format``, ``text_column``, ``label_column``).

    Returns:
        (rows, the file's sha256).

    Raises:
        MhsaError: see :class:`TextRows`; also a file with no row holding text.
    """
    stream = TextRows(path, opts["format"], opts["text_column"], opts["label_column"])
    rows = list(stream)
    if not rows:
        raise MhsaError(f"data file {path} has no rows with text")
    return rows, str(stream.sha256)  # type: ignore[return-value]
