"""One schema for every stage: CLI options and YAML recipe keys are the same
dataclass fields, with the same names, defaults and help text.

A field is declared with :func:`opt`; :func:`build_config` turns a mapping
(from the CLI, a recipe stage, or ``key=value`` overrides) into a validated
dataclass, and :mod:`mhsa_cli.cli` turns the same fields into Typer options.
Unknown keys are an error that names the closest valid key.

Modules of this package:

* :mod:`.fields` -- :func:`opt`, type coercion and validation, :func:`build_config`,
  ``key=value`` overrides (:func:`parse_assignments`), :func:`load_yaml`.
* :mod:`.common` -- the upper bounds of numbers (``MAX_*``) and the option groups every stage shares.
* :mod:`.training` -- :class:`TrainConfig`, :class:`DistillConfig`, the training and fine-tuning
  defaults, :func:`resolve_loop`.
* :mod:`.pruning` -- :class:`PruneConfig`.
* :mod:`.stages` -- the other stage dataclasses (quantize, bench, predict, export, import, recipe).
"""

from .fields import (ConfigFactory, _base_type, _check_choice, _check_range, _coerce, _scalar_or_text,
                     build_config, field_types, load_yaml, opt, parse_assignments, to_dict)
from .common import MAX_BATCH, MAX_EPOCHS, MAX_FF, MAX_LAYERS, MAX_LR, MAX_SEED, MAX_THREADS, MAX_WIDTH, task_names
from .pruning import PruneConfig
from .stages import BenchConfig, ExportConfig, ImportConfig, PredictConfig, QuantizeConfig, RecipeConfig
from .training import INIT_FIXED, TRAIN_DEFAULTS, DistillConfig, TrainConfig, resolve_loop

__all__ = [
    "INIT_FIXED", "MAX_BATCH", "MAX_EPOCHS", "MAX_FF", "MAX_LAYERS", "MAX_LR", "MAX_SEED", "MAX_THREADS",
    "MAX_WIDTH", "TRAIN_DEFAULTS", "BenchConfig", "ConfigFactory", "DistillConfig", "ExportConfig",
    "ImportConfig", "PredictConfig", "PruneConfig", "QuantizeConfig", "RecipeConfig", "TrainConfig",
    "build_config", "field_types", "load_yaml", "opt", "parse_assignments", "resolve_loop", "task_names",
    "to_dict",
]
