"""Built-in tasks and file loaders, one module each, and the registry.

Every task returns a :class:`TaskData` with disjoint train / validation / test
splits. ``TaskData.spec`` is JSON-serialisable and stored in every checkpoint;
:func:`task_from_spec` rebuilds exactly the same splits (and the same tokenizer)
from it, so any later command judges a model on the data it was trained for.

The test split is only for final reporting: never for training, early
stopping, pruning importance or calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import MhsaError, cap, choice


@dataclass
class Split:
    """One split. ``x``: (N, T) int64 token ids (0 = padding) or (N, T, F) float32."""

    x: torch.Tensor
    y: torch.Tensor  # (N,) int64 class ids
    # Rows of variable length, padded at the end with pad_id: batches are cut to their
    # longest row (length-aware batching). Off for the synthetic tasks, whose
    # published results come from fixed-shape batches.
    ragged: bool = False
    pad_id: int = 0  # the padding id of x (imported RoBERTa models pad with 1)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) int64: position of each row's last non-padding token + 1 (tokens only)."""
        cached = getattr(self, "_lengths", None)
        if cached is None or cached.shape[0] != self.x.shape[0]:
            pos = torch.arange(1, self.x.shape[1] + 1)  # (T,)
            cached = ((self.x != self.pad_id).long() * pos).amax(dim=1) if self.x.dim() == 2 else \
                torch.full((self.x.shape[0],), self.x.shape[1], dtype=torch.long)
            self._lengths = cached
        return cached

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of rows ``idx``; a ragged split's x cut to the longest of them.

        Exact: the cut columns are padding, which the attention mask and the
        mean pooling ignore, and positions are absolute from the start.
        """
        x = self.x[idx]  # (B, T) or (B, T, F)
        if self.ragged and len(idx):
            x = x[:, : max(1, int(self.lengths[idx].max()))]
        return x, self.y[idx]


@dataclass
class TaskData:
    """A task's data and everything a model needs to know about its inputs."""

    spec: dict[str, Any]  # JSON: {"name", "seed", options..., vocab/labels as needed}
    input_kind: str  # "tokens" | "features"
    vocab_size: int  # tokens: incl. pad (0) and unk (1); features: 0
    feature_dim: int  # features: F; tokens: 0
    max_len: int  # T
    labels: list[str]  # class names; index = class id
    train: Split
    val: Split
    test: Split

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> Split:
        """Return the split called ``name`` (train, val or test)."""
        return {"train": self.train, "val": self.val, "test": self.test}[choice("split", name, ["train", "val", "test"])]

    def summary(self) -> dict[str, Any]:
        """Sizes and shapes for tables (``mhsa tasks``, ``mhsa info``)."""
        return {
            "name": self.spec["name"],
            "input": self.input_kind,
            "classes": self.num_classes,
            "max_len": self.max_len,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            **({"max_len_auto": True} if self.spec.get("max_len_auto") else {}),
        }


@dataclass(frozen=True)
class OptionType:
    """Type and range of a task option (``--task-opt key=value``), checked before the builder runs.

    ``kind`` is int, float, bool or str; ``low``/``high`` bound numbers (inclusive unless
    ``low_open``); ``None`` (unset) is always accepted.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False


def check_option(task: str, name: str, value: Any, rule: OptionType) -> Any:
    """``value`` converted to ``rule.kind`` and range-checked.

    Raises:
        MhsaError: wrong type (a list where a number goes, "abc" for an integer, nan) or out of range.
    """
    if value is None:
        return None
    what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[rule.kind]
    bad = MhsaError(f"{task} task: option '{name}' must be {what}, got {cap(repr(value), 60)}")
    if isinstance(value, (list, dict, tuple)) or (rule.kind is not bool and isinstance(value, bool)):
        raise bad
    if rule.kind is str:
        return str(value)
    if rule.kind is bool:
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if isinstance(value, bool) or str(value).strip().lower() in words:
            return value if isinstance(value, bool) else words[str(value).strip().lower()]
        raise bad
    try:
        number = float(value)
        if rule.kind is int:
            if not number.is_integer():
                raise ValueError
            number = int(value) if isinstance(value, int) else int(number)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if not math.isfinite(number):
        raise bad
    if rule.low is not None and (number < rule.low or (rule.low_open and number == rule.low)):
        raise MhsaError(f"{task} task: option '{name}' must be {'>' if rule.low_open else '>='} {rule.low:g}, "
                        f"got {number}")
    if rule.high is not None and number > rule.high:
        raise MhsaError(f"{task} task: option '{name}' must be <= {rule.high:g}, got {number}")
    return number


@dataclass
class TaskInfo:
    """A registered task: ``build(seed, **options) -> TaskData``."""

    name: str
    description: str
    input_kind: str
    build: Callable[..., TaskData]
    needs: str = ""  # optional extra needed, e.g. "scikit-learn"
    size: str = ""  # default split sizes, for `mhsa tasks`
    classes: str = ""  # number of classes (or where they come from)
    options: dict[str, str] = field(default_factory=dict)  # option -> help
    # option -> type and range, checked by load_task before build (every option should have one)
    option_types: dict[str, OptionType] = field(default_factory=dict)
    # Training defaults that differ from TrainConfig's (e.g. more epochs for small data).
    train_defaults: dict[str, Any] = field(default_factory=dict)
    # Rebuild from a stored spec; default: build(seed, **options in spec).
    from_spec: Callable[[dict[str, Any]], TaskData] | None = None


TASKS: dict[str, TaskInfo] = {}


def register(info: TaskInfo) -> TaskInfo:
    TASKS[info.name] = info
    return info


def load_task(name: str, seed: int = 0, **options: Any) -> TaskData:
    """Build task ``name`` deterministically from ``seed`` and its options.

    Raises:
        MhsaError: unknown task, unknown option, or unusable data.
    """
    info = TASKS[choice("task", name, TASKS)]
    return info.build(seed=seed, **check_options(name, options))


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Task ``name``'s options, known and each of the right type and range (see :class:`OptionType`).

    Config validation calls this too, so a recipe's bad task option fails before any stage runs.

    Raises:
        MhsaError: unknown task or option (closest named), wrong type, out of range.
    """
    info = TASKS[choice("task", name, TASKS)]
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        from ..errors import closest

        raise MhsaError(
            f"task '{name}' has no option '{cap(unknown[0], 60)}'{closest(unknown[0], info.options)}"
            f"; options: {', '.join(info.options) or 'none'}"
        )
    return {k: check_option(name, k, v, info.option_types[k]) if k in info.option_types else v
            for k, v in options.items()}


def task_from_spec(spec: dict[str, Any]) -> TaskData:
    """Rebuild the task stored in a checkpoint (same splits, same vocabulary)."""
    info = TASKS[choice("task", str(spec.get("name")), TASKS)]
    if info.from_spec is not None:
        return info.from_spec(spec)
    opts = {k: v for k, v in spec.items() if k in info.options}
    return load_task(info.name, seed=int(spec.get("seed", 0)), **opts)


NO_DATA = "no data"  # how a missing data set is recorded (export.json, quantize / prune results)


def task_or_reason(spec: dict[str, Any]) -> tuple[TaskData | None, str | None]:
    """The data of a stored task spec, or None and why there is none.

    Export, quantize and prune by magnitude or random run from the checkpoint alone;
    its data, when it can be rebuilt, only adds accuracy.

    Returns:
        ``(data, None)``; ``(None, "no data")`` for a spec stored without data (an
        import without ``--data``); ``(None, "no data: <why>")`` when rebuilding it
        fails (a data file gone or changed: a checkpoint copied to another machine).
    """
    if "path" in spec and not spec.get("path"):
        return None, NO_DATA
    try:
        return task_from_spec(spec), None
    except MhsaError as exc:
        return None, f"{NO_DATA}: {exc}"


# Registration happens on import of each task module.
from . import synthetic  # noqa: E402,F401

for _mod in ("digits", "text", "hf_text"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as exc:  # module not written yet, or its extra missing
        if exc.name and exc.name.endswith(_mod):
            continue
        raise
