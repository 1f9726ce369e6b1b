"""Head importance criteria + physical head removal (``mhsa prune``).

Three steps, each a public function in its own module:

1. :mod:`.importance` -- :func:`head_importance` scores every head on the
   **validation** split with a criterion from :data:`IMPORTANCE`.
2. :mod:`.select` -- :func:`select_heads` picks the heads to remove from the
   scores (``ratio`` or ``n``; ``global`` or ``layer`` scope; ``min_heads_per_layer``).
3. :mod:`.surgery` -- where heads are removed: :func:`remove_heads` deletes their
   weights, updates ``model.config.heads`` and proves with a forward pass that
   the pruned model equals the original with those heads gated to zero.

:mod:`.command` holds :func:`prune` (``mhsa prune``): load, score, remove
(optionally in several steps with fine-tuning), save a checkpoint; or, with
``sweep``, the sensitivity curve of Michel et al. (2019).

Everything public is importable from here (``from mhsa_cli.prune import X``).
"""

from __future__ import annotations

from .command import Accuracy, PruneResult, SweepResult, prune
from .importance import (IMPORTANCE, NEEDS_DATA, NORMALIZED, SEEDED, Batches, ImportanceFn, head_importance,
                         normalize_per_layer, validation_batches)
from .select import SCOPES, heads_to_remove_count, select_heads
from .surgery import (TOLERANCE, check_structure, gap_tolerance, gates_for, max_logit_gap, probe_input,
                      remove_heads)

__all__ = [
    "Accuracy", "Batches", "IMPORTANCE", "ImportanceFn", "NEEDS_DATA", "NORMALIZED", "PruneResult", "SCOPES",
    "SEEDED", "SweepResult", "TOLERANCE", "check_structure", "gap_tolerance", "gates_for", "head_importance",
    "heads_to_remove_count", "max_logit_gap", "normalize_per_layer", "probe_input", "prune", "remove_heads",
    "select_heads", "validation_batches",
]
