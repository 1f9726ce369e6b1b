"""Reading the text task's data files: CSV / TSV / JSONL into (line, text, label) rows.

Rows are read with the ``csv`` / ``json`` modules (quoted fields, embedded
commas and newlines, utf-8 with optional BOM); every problem is one line that
names the file and the line (:func:`data_file_error` is shared with ``mhsa predict``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from typing import Any

from ..errors import MhsaError, cap

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
Row = tuple[int, str, str]  # (line number, text, label string)


def data_file_error(path: str, exc: OSError) -> MhsaError:
    """The one-line error for a data file that cannot be opened or read (training and ``mhsa predict``).

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


def _read_file(path: str) -> tuple[str, str]:
    """Return (decoded text, sha256 hex) of ``path``; BOM stripped."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise data_file_error(path, exc) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MhsaError(f"data file {path} is not valid utf-8 (byte {exc.start})") from None
    return text, hashlib.sha256(data).hexdigest()


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


def _record_start(lines: list[str], after: int) -> int:
    """1-based line where the record after physical line ``after`` starts (blank lines skipped):
    where an unclosed quote opened, not the end of the file where the reader noticed."""
    n = after + 1
    while n <= len(lines) and not lines[n - 1].strip():
        n += 1
    return min(n, max(len(lines), 1))


def _field_count_error(path: str, record: dict[Any, Any], columns: list[str], lines: list[str],
                       start: int, end: int, delimiter: str) -> MhsaError:
    """A row with more or fewer fields than the header (it would make a phantom class or column)."""
    got = len(columns) + len(record.get(None) or []) - sum(v is None for v in record.values())
    if got < len(columns) and end > start and '"' in lines[start - 1]:  # ran on to the end of the file
        return MhsaError(f"{path} line {start}: a quote opened here is never closed (the field runs on "
                         f"to line {end})")
    hint = f"an unquoted {delimiter!r} in a text? quote the field" if got > len(columns) else "fields missing"
    return MhsaError(f"{path} line {start}: {got} field{'s' * (got != 1)}, the header has {len(columns)} ({hint})")


def _parse_csv(content: str, path: str, delimiter: str, text_col: str, label_col: str) -> list[Row]:
    """Rows of a CSV / TSV file with a header line; empty texts skipped."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        columns = list(reader.fieldnames or [])
        if not columns:
            raise MhsaError(f"data file {path} is empty (no header, no rows)")
        for col, kind in ((text_col, "text"), (label_col, "label")):
            if col not in columns:
                raise _missing_column(path, col, kind, columns)
        rows: list[Row] = []
        lines = content.split("\n")
        end = reader.line_num  # last physical line of the previous record (the header first)
        for record in reader:
            start, end = _record_start(lines, end), reader.line_num
            if None in record or None in record.values():  # csv's restkey / restval
                raise _field_count_error(path, record, columns, lines, start, end, delimiter)
            text, label = record.get(text_col), record.get(label_col)
            if text is None or not text.strip():
                continue
            if label is None or not label.strip():
                raise MhsaError(f"{path} line {start}: empty label")
            rows.append((start, text, label.strip()))
    except csv.Error as exc:
        line = _record_start(lines, end)
        why = "a quote opened here is never closed" if "end of data" in str(exc) else cap(str(exc), 120)
        raise MhsaError(f"{path} line {line}: bad {delimiter!r}-separated row: {why}") from None
    return rows


def _parse_jsonl(content: str, path: str, text_col: str, label_col: str) -> list[Row]:
    """Rows of a JSON-lines file (one object per line); blank lines and empty texts skipped."""
    rows: list[Row] = []
    seen: dict[str, None] = {}  # keys seen so far, in order, for error messages
    for num, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MhsaError(f"{path} line {num}: invalid JSON ({exc.msg}, column {exc.colno}); "
                           "expected one JSON object per line") from None
        except RecursionError:
            raise MhsaError(f"{path} line {num}: JSON nested too deeply; expected one flat object per line") from None
        if not isinstance(obj, dict):
            raise MhsaError(f"{path} line {num}: expected a JSON object, got {type(obj).__name__}")
        seen.update(dict.fromkeys(obj))
        for col, kind in ((text_col, "text"), (label_col, "label")):
            if col not in obj:
                if num == 1 or not rows:
                    raise _missing_column(path, col, kind, list(seen))
                raise MhsaError(f"{path} line {num}: no '{col}' field")
        text, label = obj[text_col], obj[label_col]
        if text is None or not str(text).strip():
            continue
        if label is None or isinstance(label, (dict, list)) or not str(label).strip():
            raise MhsaError(f"{path} line {num}: label must be a non-empty string or number")
        rows.append((num, str(text), str(label).strip()))
    return rows


def read_rows(path: str, opts: dict[str, Any]) -> tuple[list[Row], str]:
    """Read and parse one data file. Returns (rows, sha256)."""
    fmt = _format_of(path, opts["format"])
    content, sha = _read_file(path)
    if fmt == "jsonl":
        rows = _parse_jsonl(content, path, opts["text_column"], opts["label_column"])
    else:
        delimiter = "\t" if fmt == "tsv" else ","
        rows = _parse_csv(content, path, delimiter, opts["text_column"], opts["label_column"])
    if not rows:
        raise MhsaError(f"data file {path} has no rows with text")
    return rows, sha
