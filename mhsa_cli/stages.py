"""Where each command's library call and renderer live, in one table.

Targets are ``"module:function"`` strings resolved lazily, so ``mhsa --help``
imports no stage code. The CLI (:mod:`mhsa_cli.cli`) and the recipe runner
(:mod:`mhsa_cli.recipe`) both read this table.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

# command -> its library call, run(cfg, progress=...)
RUN = {
    "train": "train:train",
    "prune": "prune:prune",
    "quantize": "quantize:quantize",
    "distill": "distill:distill",
    "export": "export:export",
    "bench": "bench:bench",
    "predict": "predict:predict",
    "run": "recipe:run_recipe",
    "import": "imports:import_hf",
    "finetune": "train:train",  # recipes only: a train stage fed by `from` (train --init)
}
# command -> its renderer, render(result, console); report modules are named after the command
# (run -> recipe, import, a Python keyword, -> imports, finetune -> train)
_REPORT = {"run": "recipe", "import": "imports", "finetune": "train"}
RENDER = {name: f"report.{module}:render_{module}" for name, module in
          ((name, _REPORT.get(name, name)) for name in RUN)}


def resolve(target: str) -> Callable[..., Any]:
    """``"module:function"`` (relative to ``mhsa_cli``) -> the function."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f"mhsa_cli.{module}"), name)
