"""What the benchmark scripts that drive the CLI share: run this tree's `mhsa`, the load average,
point gaps and met/missed marks, and p50s from a bench.json row.

Imported as ``from _cli import ...`` (a script's own folder is first on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def mhsa(*args: Any) -> float:
    """Run this tree's CLI; return wall seconds (exits with its stderr on failure)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mhsa_cli", *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"mhsa {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def mark(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def pts(a: float, b: float) -> float:
    """Accuracy gap a - b in points, rounded to 1e-6 (5 rows of 500 are 1.0 pt, not 1.0000000000000009)."""
    return round(100 * (a - b), 6)


def p50(row: dict[str, Any], batch: int) -> float:
    """A bench.json row's CPU p50 (ms) at ``batch``."""
    return next(c["latency_ms_p50"] for c in row["cells"] if c["batch_size"] == batch and c["device"] == "cpu")
