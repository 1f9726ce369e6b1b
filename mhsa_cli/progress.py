"""Progress reporting that the library can call without printing itself.

Library functions take a ``progress`` argument (default :data:`NULL`); the CLI
passes a :class:`RichProgress` that draws live bars on stderr.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


class Task:
    """A handle on one bar: ``advance`` it, show live ``fields`` (e.g. loss)."""

    def advance(self, n: int = 1, **fields: Any) -> None:  # noqa: D401 - no-op default
        pass


class Progress:
    """Silent progress: the default for library calls and tests."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Task]:
        yield Task()

    def log(self, message: str) -> None:
        pass


NULL = Progress()


class _RichTask(Task):
    def __init__(self, bar: Any, task_id: Any):
        self.bar, self.task_id = bar, task_id

    def advance(self, n: int = 1, **fields: Any) -> None:
        info = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self.bar.update(self.task_id, advance=n, info=info)


class RichProgress(Progress):
    """Live rich bars on stderr; ``log`` lines print above them."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Task]:
        if not self.console.is_terminal:  # piped or logged: log lines only, no bar residue
            yield Task()
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                  console=self.console, transient=True)
        with bar:
            yield _RichTask(bar, bar.add_task(description, total=total, info=""))

    def log(self, message: str) -> None:
        # piped or logged: one line per message, never wrapped at the console's guessed width
        self.console.print(message, highlight=False, markup=False, soft_wrap=not self.console.is_terminal)
