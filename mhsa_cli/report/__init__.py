"""Rendering: rich tables in the terminal and JSON / CSV / Markdown files.

Measurement lives elsewhere (bench.py, prune.py, ...): those return numbers
with units in their names; the modules here only turn them into tables and
files, one module per command.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from rich.table import Table


def fmt(value: Any, digits: int = 4) -> str:
    """Human formatting for table cells: floats to ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 layer``, ``2 layers`` (``words``: an irregular plural)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def ci95_points(acc: float, n: int) -> float:
    """Half-width, in percentage points, of the 95 % Wilson interval of an accuracy on ``n`` samples.

    Wilson rather than the normal approximation, which claims ±0 at 100 %.
    """
    z = 1.959964
    if n <= 0:
        return 100.0
    return 100.0 * z / (1 + z * z / n) * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n))


SMALL_TEST = 200  # test rows below which a warning gives the accuracy's 95 % interval


def small_test_note(n: int, acc: float | None) -> str | None:
    """A warning when a test split is too small to tell models apart, or None.

    Example: 40 rows at 95 % accuracy -> ±7.6 points (95 % interval).
    """
    if n >= SMALL_TEST or acc is None:
        return None
    return (f"warning: the test split has only {plural(n, 'row')}: a test accuracy of {pct(acc)} is "
            f"±{ci95_points(acc, n):.1f} points (95 % interval); differences smaller than that are noise")


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def points(delta: float | None) -> str:
    """An accuracy difference (fractions) in signed percentage points."""
    return "–" if delta is None else f"{100 * delta:+.2f} pt"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def kv_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    """A two-column key/value table."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")  # wrap at spaces; a word wider than the terminal folds, never "…"
    for k, v in rows:
        t.add_row(k, v if isinstance(v, str) else fmt(v))
    return t


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table with a header row."""
    t = Table(title=title, title_justify="left")
    rows = [list(r) for r in rows]
    for i, c in enumerate(columns):
        numeric = i > 0 and bool(rows) and all(isinstance(r[i], (int, float)) or _numeric_text(r[i]) for r in rows)
        t.add_column(c, justify="right" if numeric else "left", overflow="fold")  # never cut a value
    for r in rows:
        t.add_row(*[v if isinstance(v, str) else fmt(v) for v in r])
    return t


def _numeric_text(v: Any) -> bool:
    return isinstance(v, str) and v[:1].isdigit() or v in ("–",)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(v if isinstance(v, str) else fmt(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write a file via a temporary file + rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_NUMBER_LIST = re.compile(rf"\[\s*({_NUMBER}(?:,\s*{_NUMBER})*)\s*\]")


def json_text(obj: Any) -> str:
    """Indented JSON with every list of plain numbers on one line (raw latency samples stay readable)."""
    text = json.dumps(obj, indent=2, default=str)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write :func:`json_text` of ``obj`` atomically."""
    return write_atomic(path, json_text(obj) + "\n")


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
