"""Checkpoints: a folder of safetensors weights + one JSON file. Never pickle.

Layout of a checkpoint folder::

    model.safetensors   weights (float, or int8 + scales for kind "int8")
    checkpoint.json     kind, architecture (per-layer heads), task spec, config,
                        metrics, environment, lineage
    *.json / *.md       extra files a stage adds (e.g. head_importance.json)

Writing is atomic: everything goes to a hidden temporary folder beside the
target, which is renamed into place at the end. An existing folder is only
replaced with ``force``.

Modules of this package:

* :mod:`.io` -- :class:`Checkpoint`, :func:`make_meta`, save and load, :func:`size_on_disk`.
* :mod:`.schema` -- the JSON schema of ``checkpoint.json``, checked on load (:func:`validate_meta`).
* :mod:`.kinds` -- :class:`CheckpointKind`, weights checked against the JSON, the ``float`` kind.
* :mod:`.outputs` -- output folders: :func:`check_output_dir`, :func:`atomic_dir`, :func:`write_files`.
"""

import os  # noqa: F401  (``mhsa_cli.checkpoint.os`` stays reachable, as before the split)

from .io import (META, WEIGHTS, Checkpoint, finetune_loop, load_checkpoint, load_model, make_meta,
                 save_checkpoint, save_model, size_on_disk, training_loop, weights_id)
from .kinds import KINDS, CheckpointKind, check_finite, check_tensors, expected_state, load_state
from .outputs import _write_json, atomic_dir, check_output_dir, resolve_path, write_files
from .schema import FORMAT, VERSION, validate_meta

__all__ = [
    "FORMAT", "KINDS", "META", "VERSION", "WEIGHTS", "Checkpoint", "CheckpointKind", "atomic_dir",
    "check_finite", "check_output_dir", "check_tensors", "expected_state", "finetune_loop", "load_checkpoint",
    "resolve_path", "training_loop",
    "load_model", "load_state", "make_meta", "save_checkpoint", "save_model", "size_on_disk",
    "validate_meta", "weights_id", "write_files",
]
