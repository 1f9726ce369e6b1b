"""Built-in tasks and file loaders, one module each, and the registry.

Every task returns a :class:`TaskData` with disjoint train / validation / test
splits. ``TaskData.spec`` is JSON-serialisable and stored in every checkpoint;
:func:`task_from_spec` rebuilds exactly the same splits (and the same tokenizer)
from it, so any later command judges a model on the data it was trained for.

The test split is only for final reporting: never for training, early
stopping, pruning importance or calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import MhsaError, choice


@dataclass
class Split:
    """One split. ``x``: (N, T) int64 token ids (0 = padding) or (N, T, F) float32."""

    x: torch.Tensor
    y: torch.Tensor  # (N,) int64 class ids

    def __len__(self) -> int:
        return int(self.y.shape[0])


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
        }


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
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        from ..errors import closest

        raise MhsaError(
            f"task '{name}' has no option '{unknown[0]}'{closest(unknown[0], info.options)}"
            f"; options: {', '.join(info.options) or 'none'}"
        )
    return info.build(seed=seed, **options)


def task_from_spec(spec: dict[str, Any]) -> TaskData:
    """Rebuild the task stored in a checkpoint (same splits, same vocabulary)."""
    info = TASKS[choice("task", str(spec.get("name")), TASKS)]
    if info.from_spec is not None:
        return info.from_spec(spec)
    opts = {k: v for k, v in spec.items() if k in info.options}
    return load_task(info.name, seed=int(spec.get("seed", 0)), **opts)


# Registration happens on import of each task module.
from . import synthetic  # noqa: E402,F401

for _mod in ("digits", "text", "hf_text"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as exc:  # module not written yet, or its extra missing
        if exc.name and exc.name.endswith(_mod):
            continue
        raise
