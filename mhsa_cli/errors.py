"""User-facing errors.

Library code raises :class:`MhsaError` for anything caused by the user's input
(bad option, missing file, wrong checkpoint kind). The CLI turns it into one
clear line on stderr and exit code 2, with no traceback (``--debug`` shows it).
"""

from __future__ import annotations

import difflib
from typing import Iterable


class MhsaError(Exception):
    """A problem with the user's input, reported as one line (exit code 2).

    ``key`` names the config key at fault when there is one (recipes use it to
    point at that key's YAML line).
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class MhsaWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI
    prints it as one ``warning: ...`` line on stderr."""


def warn(message: str) -> None:
    """Issue an :class:`MhsaWarning` (shown once per message by the CLI)."""
    import warnings

    warnings.warn(message, MhsaWarning, stacklevel=2)


def cap(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out: an error line quotes
    a user's file or value, never all of it (a 5 MB header line must not become a 5 MB error)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def choice(kind: str, name: str, choices: Iterable[str]) -> str:
    """Validate ``name`` against ``choices`` and return it.

    Raises:
        MhsaError: unknown name, with the valid choices and the closest one.
    """
    choices = list(choices)
    if name not in choices:
        raise MhsaError(
            f"unknown {kind} '{name}'{closest(name, choices)}; choose from: {', '.join(choices)}"
        )
    return name
