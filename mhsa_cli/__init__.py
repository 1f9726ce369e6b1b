"""mhsa: train, prune, quantize, distill and benchmark multi-head self-attention models.

The library API mirrors the CLI: each stage function takes its stage's config
dataclass (:mod:`mhsa_cli.config`) and returns a result dataclass. The stage
functions live in modules of the same name (``mhsa_cli.train.train``,
``mhsa_cli.prune.prune``, ``quantize``, ``distill``, ``bench``)::

    from mhsa_cli import TrainConfig, build_config
    from mhsa_cli.train import train
    result = train(build_config(TrainConfig, {"out": "runs/baseline"}))

Names below are re-exported lazily so that ``mhsa --help`` stays fast. (The stage
functions are not: their names are their modules' names.)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "run_recipe": "recipe", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "build_config": "config", "TrainConfig": "config", "PruneConfig": "config",
    "QuantizeConfig": "config", "DistillConfig": "config", "BenchConfig": "config", "ExportConfig": "config", "RecipeConfig": "config",
    "load_task": "tasks", "MhsaError": "errors",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'mhsa_cli' has no attribute '{name}'")
    module = importlib.import_module(f"mhsa_cli.{_API[name]}")
    value = getattr(module, name)
    return value
