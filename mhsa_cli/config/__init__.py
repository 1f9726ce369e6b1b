"""One schema for every stage: CLI options and YAML recipe keys are the same
dataclass fields, with the same names, defaults and help text.

A field is declared with :func:`opt`; :func:`build_config` turns a mapping
(from the CLI, a recipe stage, or ``key=value`` overrides) into a validated
dataclass, and :mod:`mhsa_cli.cli` turns the same fields into Typer options.
Unknown keys are an error that names the closest valid key.

Modules of this package:

* :mod:`.fields` -- :func:`opt`, type coercion and validation, :func:`build_config`,
  ``key=value`` overrides (:func:`parse_assignments`), :func:`load_yaml`.
* :mod:`.stages` -- the stage dataclasses (:class:`TrainConfig`, :class:`PruneConfig`, ...),
  shared option groups and the upper bounds of numbers (``MAX_*``).
"""

from .fields import (ConfigFactory, _base_type, _check_choice, _check_range, _coerce, _scalar_or_text,
                     build_config, field_types, load_yaml, opt, parse_assignments, to_dict)
from .stages import (INIT_FIXED, MAX_BATCH, MAX_EPOCHS, MAX_FF, MAX_LAYERS, MAX_LR, MAX_SEED, MAX_THREADS,
                     MAX_WIDTH, TRAIN_DEFAULTS, BenchConfig, DistillConfig, ExportConfig, ImportConfig,
                     PredictConfig, PruneConfig, QuantizeConfig, RecipeConfig, TrainConfig, resolve_loop,
                     task_names)

__all__ = [
    "INIT_FIXED", "MAX_BATCH", "MAX_EPOCHS", "MAX_FF", "MAX_LAYERS", "MAX_LR", "MAX_SEED", "MAX_THREADS",
    "MAX_WIDTH", "TRAIN_DEFAULTS", "BenchConfig", "ConfigFactory", "DistillConfig", "ExportConfig",
    "ImportConfig", "PredictConfig", "PruneConfig", "QuantizeConfig", "RecipeConfig", "TrainConfig",
    "build_config", "field_types", "load_yaml", "opt", "parse_assignments", "resolve_loop", "task_names",
    "to_dict",
]
