"""What a pruning run stores: ``head_importance.json``, ``pruning.json`` and the metrics of
``checkpoint.json`` (from a :class:`~mhsa_cli.prune.command.PruneResult`).

``pruning.json`` holds the plan (each granularity's settings), the shape before and
after (layers, heads and ``d_ff`` per layer), what was removed (original indices:
blocks, heads per original layer, neurons per original layer) and every step's
scores. ``head_importance.json`` keeps its former content (heads only).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import PruneConfig
from .importance import NEEDS_DATA, NORMALIZED
from .layers import LAYER_NEEDS_DATA

HEAVY = ("neuron_scores",)  # kept in pruning.json only: one float per neuron and step


def _kept(counts: list[int], removed: list[list[int]], layers_kept: list[int]) -> list[list[int]]:
    """Original indices kept, per original layer (a dropped layer keeps nothing)."""
    alive = set(layers_kept)
    return [[i for i in range(n) if i not in set(removed[l])] if l in alive else [] for l, n in enumerate(counts)]


def importance_doc(cfg: PruneConfig, r: Any) -> dict[str, Any]:
    """Content of ``head_importance.json`` (scores per original layer; [] for a dropped one)."""
    return {"method": r.method, "split": "val" if r.method in NEEDS_DATA else None,
            "normalize": cfg.normalize and r.method in NORMALIZED,
            "importance_batches": cfg.importance_batches, "batch_size": cfg.batch_size, "seed": cfg.seed,
            "scope": r.scope, "heads_before": r.heads_before, "heads_after": r.heads_after,
            "scores": r.scores, "removed": r.removed, "kept": _kept(r.heads_before, r.removed, r.layers_kept),
            "steps": [{"step": s["step"], "scores": s["scores"], "removed": s["removed"]} for s in r.steps]}


def _plan(cfg: PruneConfig, r: Any) -> dict[str, Any]:
    return {"iterative": cfg.iterative, "finetune_epochs": cfg.finetune_epochs,
            "layers": {"drop": cfg.drop_layers, "at": cfg.drop_layers_at, "method": cfg.layer_method},
            "heads": {"ratio": cfg.ratio, "count": cfg.heads, "scope": cfg.scope, "method": cfg.method[0],
                      "min_heads_per_layer": cfg.min_heads_per_layer},
            "neurons": {"ratio": cfg.ffn_ratio, "scope": cfg.ffn_scope, "method": cfg.method[0]},
            "kd": r.kd, "budget": cfg.budget}


def _split(cfg: PruneConfig) -> str | None:
    """``"val"`` when a score read the validation split; None when every criterion read weights alone."""
    blocks = (cfg.drop_layers or cfg.budget) and not cfg.drop_layers_at and cfg.layer_method in LAYER_NEEDS_DATA
    return "val" if cfg.method[0] in NEEDS_DATA or blocks else None


def pruning_doc(cfg: PruneConfig, r: Any) -> dict[str, Any]:
    """Content of ``pruning.json``: the plan, the shapes, what was removed, every step."""
    n_layers = len(r.heads_before)
    return {"split": _split(cfg), "plan": _plan(cfg, r), "budget": getattr(r, "budget", None),
            "before": {"layers": n_layers, "heads": r.heads_before, "d_ff": r.d_ff_before},
            "after": {"layers": r.layers_kept, "heads": r.heads_after, "d_ff": r.d_ff_after},
            "removed": {"layers": r.layers_dropped, "heads": r.removed, "neurons": r.neurons_removed},
            "kept_neurons": _kept(r.d_ff_before, r.neurons_removed, r.layers_kept),
            "layer_scores": r.layer_scores,
            "steps": [{k: s.get(k) for k in ("step", "layers_dropped", "layer_scores", "removed",
                                             "neurons_removed", "neuron_scores", "heads", "d_ff", "budget")}
                      for s in r.steps]}


def light_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The step records for ``checkpoint.json`` (per-neuron scores left to pruning.json)."""
    return [{k: v for k, v in s.items() if k not in HEAVY} for s in steps]


def metrics_doc(r: Any) -> dict[str, Any]:
    """The metrics of the pruned checkpoint (without data: ``accuracy_not_measured`` instead of accuracies)."""
    final = r.finetuned or r.pruned
    acc = ({"val_acc": final.val_acc, "test_acc": final.test_acc} if final
           else {"accuracy_not_measured": r.accuracy_not_measured})
    return {**acc, "params": r.params_after,
            "flops": r.flops_after, "heads": r.heads_after, "heads_removed": sum(map(len, r.removed)),
            "d_ff": r.d_ff_after, "neurons_removed": sum(map(len, r.neurons_removed)),
            "layers_dropped": r.layers_dropped,
            "params_before": r.params_before, "flops_before": r.flops_before,
            "flops_seq_len": r.flops_seq_len,
            "accuracy_before": dataclasses.asdict(r.before) if r.before else None,
            "accuracy_pruned": dataclasses.asdict(r.pruned) if r.pruned else None,
            "accuracy_finetuned": dataclasses.asdict(r.finetuned) if r.finetuned else None,
            **({"test_macro_f1": r.test_classes["macro_f1"], "test_classes": r.test_classes}
               if r.test_classes else {})}
