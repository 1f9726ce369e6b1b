r"""``mhsa run``: a YAML recipe is a pipeline of stages, validated whole, resumable.

A recipe::

    name: quickstart                  # results go to runs/recipes/<name>/
    defaults: {seed: 0}               # merged into every stage that has the key
    stages:
      - name: baseline
        type: train                   # train | prune | quantize | distill | export | bench
        epochs: 12                    # same keys as the command's options
      - name: pruned
        type: prune
        from: baseline                # the input checkpoint (teacher for distill)
        ratio: 0.5
      - name: bench
        type: bench
        compare: [baseline, pruned]   # bench takes several stages
        baseline: baseline
        runtime: [torch, onnxruntime] # optional: ORT fp32 / int8 rows too

Every stage's keys are validated against the same config dataclass as its
command (one schema), with the YAML line in the error. ``out`` and ``force``
are set by the runner: each stage writes ``<out>/<stage>/``.

Resume: each finished stage leaves ``stage.json`` holding a hash of its
resolved settings, the contents of the files they name, the mhsa version and
its inputs' hashes; the SHA-256 of every file it wrote; and, for measuring
stages (bench), the measurement environment. A re-run skips a stage only when
all of these still hold (:func:`stage_state` says why not) and reruns from the
first that changed (and everything that depends on it); ``--rerun-from STAGE``
forces one stage and its dependants. Stage outputs are written atomically and ``stage.json`` last,
so an interrupted run leaves no half-written stage.

Two modules:

1. :mod:`.validate` -- where a recipe is checked: :func:`load_recipe_text`
   (YAML with lines), :data:`STAGE_TYPES` (:class:`StageType`), and
   :func:`validate_recipe`, which returns a :class:`Plan` of hashed :class:`Stage`\ s.
2. :mod:`.run` -- where a recipe runs: :func:`run_recipe` (``mhsa run``), resume
   (:func:`stage_done`, :func:`mark_plan`), the final bench, :func:`clean_stage`;
   returns a :class:`RecipeResult`.

Everything public is importable from here (``from mhsa_cli.recipe import X``).
"""

from __future__ import annotations

from .run import (BENCH_FILES, SCALES_OUT, RecipeResult, clean_stage, mark_plan, plan_device, recipe_device,
                  run_recipe, stage_done, stage_files, stage_state)
from .validate import (RECIPE_FILE, RUNS_ROOT, RUNNER_KEYS, STAGE_FILE, STAGE_META_KEYS, STAGE_TYPES, TOP_KEYS, Plan, Stage,
                       StageType, default_out, load_recipe_text, validate_recipe)

__all__ = [
    "BENCH_FILES", "Plan", "RECIPE_FILE", "RUNNER_KEYS", "RUNS_ROOT", "RecipeResult", "SCALES_OUT", "STAGE_FILE",
    "STAGE_META_KEYS", "STAGE_TYPES", "Stage", "StageType", "TOP_KEYS", "clean_stage", "default_out", "load_recipe_text",
    "mark_plan", "plan_device", "recipe_device", "run_recipe", "stage_done", "stage_files", "stage_state",
    "validate_recipe",
]
