"""Interruptions: Ctrl-C (SIGINT) and SIGTERM end a command in one line, leaving nothing half-written.

Python turns SIGINT into :class:`KeyboardInterrupt`, but SIGTERM (``kill``, a job
scheduler, torchrun stopping its workers) ends the process at once: no ``finally``
runs, so the hidden temporary folder of :func:`mhsa_cli.checkpoint.atomic_dir` or
predict's temporary file stayed behind. Inside :func:`interruptible` both signals
raise :class:`KeyboardInterrupt`, so every clean-up runs; a repeated signal is
ignored while that clean-up runs. The CLI then prints :func:`message` and exits
with ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interruptible() -> Iterator[dict[str, int]]:
    """SIGINT and SIGTERM raise :class:`KeyboardInterrupt` within; yields ``{"signal": number}``
    once one came (empty before). Only the main thread can set handlers: elsewhere it changes nothing."""
    got: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum: int, frame: Any) -> None:
        if "signal" in got:
            return  # the first one is being handled: let its clean-up finish
        got["signal"] = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    before = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield got
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def message(signum: int | None) -> str:
    """The one line an interrupted command prints (``error: `` is added by the CLI)."""
    name = signal.Signals(signum).name if signum else "SIGINT"
    return (f"interrupted ({name}): stopped before the end; outputs are written whole or not at all, "
            "so nothing half-written is left (rerun the command)")


def exit_code(signum: int | None) -> int:
    """128 + the signal number, as shells report a process ended by a signal."""
    return 128 + (signum or signal.SIGINT)
