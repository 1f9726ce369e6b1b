"""Where each command's library call and renderer live, in one table.

Targets are ``"module:function"`` strings resolved lazily, so ``mhsa --help``
imports no stage code. The CLI (:mod:`mhsa_cli.cli`) and the recipe runner
(:mod:`mhsa_cli.recipe`) both read this table.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

# command -> (library call, run(cfg, progress=...); renderer, render(result, console))
RUN = {
    "train": "train:train",
    "prune": "prune:prune",
    "quantize": "quantize:quantize",
    "distill": "distill:distill",
    "bench": "bench:bench",
    "run": "recipe:run_recipe",
}
RENDER = {name: f"report.{module}:render_{module}" for name, module in
          [("train", "train"), ("prune", "prune"), ("quantize", "quantize"), ("distill", "distill"),
           ("bench", "bench"), ("run", "recipe")]}


def resolve(target: str) -> Callable[..., Any]:
    """``"module:function"`` (relative to ``mhsa_cli``) -> the function."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f"mhsa_cli.{module}"), name)
