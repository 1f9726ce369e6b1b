"""One pruning step over three granularities: blocks, then heads, then feed-forward neurons.

Each step of ``mhsa prune`` (``--iterative k`` steps) scores and removes, on the
current model and in this order:

1. blocks: ``--drop-layers N`` (N*s//k cumulative by step s, chosen by
   ``--layer-method``) or ``--drop-layers-at`` (all at step 1, as given);
2. heads: ``--ratio`` (or ``--heads``) of the heads of the layers that are kept,
   ``floor(ratio * their original heads) * s // k`` removed by step s;
3. neurons: ``--ffn-ratio`` of the kept layers' original neurons, the same way,
   ``--ffn-scope layer`` (same fraction per layer) or ``global``.

Blocks go first so that head and neuron scores are measured on the blocks that
stay. :class:`Origin` maps current indices back to the original model's: every
record (``removed``, ``scores``) is per *original* layer, ``[]`` for a dropped one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..config import PruneConfig
from ..model import MHSAClassifier
from ..progress import Progress
from ..tasks import TaskData
from .importance import head_importance
from .layers import check_drop, drop_layers, layer_importance, select_layers
from .neurons import neuron_importance, remove_neurons
from .select import heads_to_remove_count, select_heads
from .surgery import remove_heads


@dataclass
class Origin:
    """Original indices of what the current model holds.

    ``layers[l]``: original index of current block l; ``heads[l]`` / ``neurons[l]``:
    original indices of its current heads / neurons. ``n_layers``: the original depth.
    """

    n_layers: int
    layers: list[int]
    heads: list[list[int]]
    neurons: list[list[int]]

    @classmethod
    def of(cls, model: MHSAClassifier) -> "Origin":
        return cls(len(model.blocks), list(range(len(model.blocks))), [list(range(h)) for h in model.heads],
                   [list(range(f)) for f in model.ff_sizes])

    def per_original(self, current: list[Any], empty: Any = None) -> list[Any]:
        """A per-current-layer list spread over the original layers (``empty`` for dropped ones)."""
        out = [[] if empty is None else empty for _ in range(self.n_layers)]
        for l, value in enumerate(current):
            out[self.layers[l]] = value
        return out

    def drop(self, gone: list[int]) -> None:
        keep = [l for l in range(len(self.layers)) if l not in set(gone)]
        self.layers, self.heads, self.neurons = ([xs[l] for l in keep] for xs in (self.layers, self.heads, self.neurons))

    @staticmethod
    def take(indices: list[list[int]], chosen: dict[int, list[int]]) -> tuple[list[list[int]], list[list[int]]]:
        """(original indices removed per current layer, original indices left per current layer)."""
        removed = [[idx[i] for i in chosen.get(l, [])] for l, idx in enumerate(indices)]
        left = [[i for i in idx if i not in set(r)] for idx, r in zip(indices, removed)]
        return removed, left


def due(total: int, step: int, k: int) -> int:
    """How many of ``total`` should be gone after step ``step`` of ``k`` (``total*step//k``)."""
    return total * step // k


def _layers(cfg: PruneConfig, model: MHSAClassifier, data: TaskData | None, step: int, origin: Origin,
            row: dict[str, Any]) -> MHSAClassifier:
    """Drop this step's blocks (explicit indices at step 1, else the least important)."""
    if cfg.drop_layers_at:
        chosen = list(cfg.drop_layers_at) if step == 1 else []
    else:
        n = due(cfg.drop_layers, step, cfg.iterative) - due(cfg.drop_layers, step - 1, cfg.iterative)
        if not n:
            return model
        scores = layer_importance(model, data, cfg.layer_method, batch_size=cfg.batch_size,
                                  max_batches=cfg.importance_batches, seed=cfg.seed + step - 1)
        row["layer_scores"] = origin.per_original(scores.tolist(), empty=None)
        chosen = select_layers(scores, n)
    if chosen:
        row["layers_dropped"] = [origin.layers[l] for l in chosen]
        model = drop_layers(model, chosen)
        origin.drop(chosen)
    return model


def _heads(cfg: PruneConfig, model: MHSAClassifier, data: TaskData | None, step: int, origin: Origin,
           heads_before: list[int], row: dict[str, Any]) -> MHSAClassifier:
    """Remove this step's heads from the kept layers."""
    kept = sum(heads_before[l] for l in origin.layers)  # original heads of the layers still here
    total = cfg.heads if cfg.heads is not None else heads_to_remove_count([kept], cfg.ratio)
    n = max(0, due(total, step, cfg.iterative) - (kept - sum(model.heads)))
    scores = []
    if n or step == 1:  # step 1 always: head_importance.json and the heatmap show them
        scores = head_importance(model, data, cfg.method[0], batch_size=cfg.batch_size,
                                 max_batches=cfg.importance_batches, normalize=cfg.normalize,
                                 seed=cfg.seed + step - 1)
    chosen = select_heads(scores, n=n, scope=cfg.scope, min_heads_per_layer=cfg.min_heads_per_layer) if n else {}
    removed, origin.heads = Origin.take(origin.heads, chosen)
    row.update(scores=origin.per_original([s.tolist() for s in scores]) if scores else [],
               removed=origin.per_original(removed))
    return remove_heads(model, chosen) if n else model


def _neurons(cfg: PruneConfig, model: MHSAClassifier, data: TaskData | None, step: int, origin: Origin,
             ff_before: list[int], row: dict[str, Any]) -> MHSAClassifier:
    """Remove this step's feed-forward neurons from the kept layers."""
    kept = sum(ff_before[l] for l in origin.layers)
    n = max(0, due(math.floor(cfg.ffn_ratio * kept + 1e-9), step, cfg.iterative) - (kept - sum(model.ff_sizes)))
    if not n:
        row["neurons_removed"] = origin.per_original([[] for _ in origin.layers])
        return model
    scores = neuron_importance(model, data, cfg.method[0], batch_size=cfg.batch_size,
                               max_batches=cfg.importance_batches, normalize=cfg.normalize,
                               seed=cfg.seed + step - 1)
    chosen = select_heads(scores, n=n, scope=cfg.ffn_scope)  # the same ranking rules as heads
    removed, origin.neurons = Origin.take(origin.neurons, chosen)
    row.update(neuron_scores=origin.per_original([s.tolist() for s in scores]),
               neurons_removed=origin.per_original(removed))
    return remove_neurons(model, chosen)


def prune_step(cfg: PruneConfig, model: MHSAClassifier, data: TaskData | None, step: int, origin: Origin,
               original: MHSAClassifier, progress: Progress) -> tuple[MHSAClassifier, dict[str, Any]]:
    """Blocks, heads, neurons of step ``step`` (see the module docstring); ``origin`` is updated.

    Returns:
        The smaller model and the step's record (``layers_dropped``, ``layer_scores``,
        ``scores`` / ``removed`` (heads), ``neuron_scores`` / ``neurons_removed``, per original layer).
    """
    row: dict[str, Any] = {"step": step, "layers_dropped": []}
    with progress.task(f"importance and removal (step {step})", total=3) as bar:
        model = _layers(cfg, model, data, step, origin, row)
        bar.advance(1)
        model = _heads(cfg, model, data, step, origin, original.heads, row)
        bar.advance(1)
        model = _neurons(cfg, model, data, step, origin, original.ff_sizes, row)
        bar.advance(1)
    row.update(heads=model.heads, d_ff=model.ff_sizes, layers=list(origin.layers))
    return model, row


def validate_plan(cfg: PruneConfig, n_layers: int) -> None:
    """The block options against the model's depth (heads and neurons: see ``command._validate``).

    Raises:
        MhsaError: both ``--drop-layers`` and ``--drop-layers-at``, an index that does not
            exist or repeats, or every block dropped.
    """
    from ..errors import MhsaError

    if cfg.drop_layers_at is not None and cfg.drop_layers:
        raise MhsaError("give --drop-layers N or --drop-layers-at i,j, not both")
    at = cfg.drop_layers_at or []
    if len(set(at)) != len(at) or any(i >= n_layers for i in at):
        raise MhsaError(f"--drop-layers-at {','.join(map(str, at))}: the model has layers 0..{n_layers - 1}")
    check_drop(n_layers, len(at) or cfg.drop_layers)
