"""Structured pruning (``mhsa prune``): heads, feed-forward neurons and whole blocks, each
scored on the validation split and physically removed.

Three steps, each a public function in its own module:

1. :mod:`.importance` -- :func:`head_importance` scores every head on the
   **validation** split with a criterion from :data:`IMPORTANCE`.
2. :mod:`.select` -- :func:`select_heads` picks the heads to remove from the
   scores (``ratio`` or ``n``; ``global`` or ``layer`` scope; ``min_heads_per_layer``).
3. :mod:`.surgery` -- where heads are removed: :func:`remove_heads` deletes their
   weights, updates ``model.config.heads`` and proves with a forward pass that
   the pruned model equals the original with those heads gated to zero.

Beyond heads: :mod:`.neurons` (:func:`neuron_importance`, :func:`remove_neurons`:
``ff1`` rows / ``ff2`` columns, per-layer ``d_ff``) and :mod:`.layers`
(:func:`layer_importance`, :func:`drop_layers`: whole blocks); :mod:`.plan` runs one
step over all three (blocks, then heads, then neurons) and :mod:`.record` writes
``pruning.json``. Every removal is proven equal to the masked original.

Instead of ratios, a budget: :mod:`.budget` (``--target-flops``: greedy by importance per
FLOP) and :mod:`.latency` (``--target-latency``: the FLOPs target found by bisection on
measured latency). :mod:`.kd` fine-tunes each step with the unpruned model as teacher.

:mod:`.command` holds :func:`prune` (``mhsa prune``): load, score, remove
(optionally in several steps with fine-tuning), save a checkpoint; or, with
``sweep``, the sensitivity curve of Michel et al. (2019).

Everything public is importable from here (``from mhsa_cli.prune import X``).
"""

from __future__ import annotations

from .command import Accuracy, PruneResult, SweepResult, prune
from .layers import LAYER_IMPORTANCE, drop_layers, layer_importance, select_layers
from .neurons import NEURON_IMPORTANCE, neuron_importance, remove_neurons
from .importance import (IMPORTANCE, NEEDS_DATA, NORMALIZED, SEEDED, Batches, ImportanceFn, head_importance,
                         normalize_per_layer, validation_batches)
from .select import SCOPES, heads_to_remove_count, select_heads
from .surgery import (TOLERANCE, check_structure, gap_tolerance, gates_for, max_logit_gap, probe_input,
                      remove_heads)

__all__ = [
    "Accuracy", "Batches", "IMPORTANCE", "LAYER_IMPORTANCE", "NEURON_IMPORTANCE", "drop_layers",
    "layer_importance", "neuron_importance", "remove_neurons", "select_layers", "ImportanceFn", "NEEDS_DATA", "NORMALIZED", "PruneResult", "SCOPES",
    "SEEDED", "SweepResult", "TOLERANCE", "check_structure", "gap_tolerance", "gates_for", "head_importance",
    "heads_to_remove_count", "max_logit_gap", "normalize_per_layer", "probe_input", "prune", "remove_heads",
    "select_heads", "validation_batches",
]
