"""What every stage config shares: the upper bounds of numbers (``MAX_*``) and the option groups
(device, threads, output folder, force) each stage's dataclass lists as its own fields."""

from __future__ import annotations

from typing import Any

from .fields import opt

# Upper bounds: far above any real use, low enough that a typo (an extra zero run, 1e9) is an error
# at validation instead of an out-of-memory crash or a run of days.
MAX_SEED = 2**32 - 1  # what every generator we seed accepts
MAX_LAYERS = 1024
MAX_WIDTH = 65536  # d_model, heads, sequence length
MAX_FF = 1 << 20
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_LR = 10.0
MAX_THREADS = 4096


def task_names() -> list[str]:
    from ..tasks import TASKS

    return list(TASKS)


# ---------------------------------------------------------------- stage configs
# Shared option groups are plain functions returning fields so each stage's
# dataclass lists its own options (and their help) in one place.

def _device(default: str = "auto") -> Any:
    return opt(default, "device: auto (cuda if present), cpu or cuda", choices=("auto", "cpu", "cuda"))


def _threads() -> Any:
    return opt(0, "torch CPU threads (0 = torch's default)", min=0, max=MAX_THREADS)


def _out(default: str) -> Any:
    return opt(default, "output folder (a checkpoint folder)")


def _force() -> Any:
    return opt(False, "replace the output folder if it exists")
