"""Budget mode (``--target-flops F``): choose how many heads, neurons and blocks go.

The rule, greedy by importance per FLOP (``RULE``, stored in ``pruning.json``):

1. Score every unit of the current model: heads and feed-forward neurons with
   ``--method``, whole blocks with ``--layer-method`` (validation split).
2. Make the three kinds comparable by rank: within its kind a unit of rank ``r``
   (0 = least important, ties by position) of ``n`` gets ``q = (r + 1) / (n + 1)``.
3. Cost: the FLOPs (:func:`mhsa_cli.model.attention_flops`) the unit saves when
   removed alone from the current model; ``rel = cost / mean cost of its kind``.
4. Priority ``q / rel``: rank quantile per relative FLOP. The assumption is that
   each kind's importance is in proportion to its FLOPs (a median head, neuron and
   block are worth the same per FLOP); within a kind, of two equally ranked units
   the one that saves more FLOPs goes first.
5. Remove units in increasing priority (ties: blocks, heads, neurons, then by
   position) until the model's FLOPs are at most the target, counted exactly after
   each removal. Skipped: units of a block already dropped, the last block, a head
   that would take its layer below ``--min-heads-per-layer``, units that save nothing.
   A block whose removal would overshoot the target is passed over (the finer units
   that follow land closer to it) and taken only if the target is missed without it.

With ``--iterative k`` step ``s`` aims at ``1 - (1 - F) * s / k`` of the original
FLOPs, re-scoring the smaller model each step. :func:`check_budget` refuses a
target at or below what removal can reach (embeddings and classifier alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import PruneConfig
from ..errors import MhsaError
from ..model import MHSAClassifier, ModelConfig, attention_flops
from ..model.flops import base_flops, layer_flops, positions
from ..progress import Progress
from ..tasks import TaskData
from .importance import head_importance
from .layers import drop_layers, layer_importance
from .neurons import neuron_importance, remove_neurons
from .plan import Origin
from .surgery import remove_heads

RULE = ("greedy by importance per FLOP: rank-normalise scores within each kind (heads, neurons, blocks: "
        "q = (rank + 1) / (n + 1)), divide by the FLOPs the unit saves relative to its kind's mean, remove "
        "the lowest first until FLOPs <= target (counted at budget seq_len); a block that would overshoot the "
        "target is passed over while heads and neurons remain")
KINDS = ("layer", "head", "neuron")  # tie order


@dataclass(frozen=True)
class Unit:
    """One removable unit of the current model: a block, a head or a neuron (current numbering)."""

    kind: str
    layer: int
    index: int  # head / neuron index within the layer; the layer itself for a block
    priority: float
    saves: int  # FLOPs saved when removed alone


@dataclass
class Shape:
    """What is left while the greedy runs: per current layer, heads, neurons, kept or not."""

    config: ModelConfig
    seq_len: int | None
    heads: list[int]
    d_ff: list[int]
    kept: list[bool]

    @classmethod
    def of(cls, config: ModelConfig, seq_len: int | None = None) -> "Shape":
        return cls(config, seq_len, list(config.heads), config.ff_sizes, [True] * config.n_layers)

    def flops(self) -> int:
        """FLOPs of this shape, the same count as :func:`attention_flops` of its config."""
        alive, T = [l for l, k in enumerate(self.kept) if k], positions(self.config, self.seq_len)
        return base_flops(self.config, self.seq_len) + sum(
            layer_flops(self.config, self.heads[l], self.d_ff[l], T, last=l == alive[-1]) for l in alive)


@dataclass
class BudgetPlan:
    """What the greedy removes (current numbering) and the FLOPs left."""

    layers: list[int] = field(default_factory=list)
    heads: dict[int, list[int]] = field(default_factory=dict)
    neurons: dict[int, list[int]] = field(default_factory=dict)
    flops: int = 0
    order: list[Unit] = field(default_factory=list)  # the units removed, in the order taken


def rank_quantiles(scores: list[float]) -> list[float]:
    """``(rank + 1) / (n + 1)`` per score, rank 0 the lowest (ties: the lower position first).

    Example:
        >>> rank_quantiles([0.5, 0.1, 0.9])
        [0.5, 0.25, 0.75]
    """
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    q = [0.0] * len(scores)
    for rank, i in enumerate(order):
        q[i] = (rank + 1) / (len(scores) + 1)
    return q


def _costs(config: ModelConfig, seq_len: int | None) -> dict[str, list[tuple[int, int, int]]]:
    """(layer, index, FLOPs saved alone) of every unit of each kind."""
    full, T, last = Shape.of(config, seq_len).flops(), positions(config, seq_len), config.n_layers - 1
    out: dict[str, list[tuple[int, int, int]]] = {k: [] for k in KINDS}
    for l, (h, f) in enumerate(zip(config.heads, config.ff_sizes)):
        layer = layer_flops(config, h, f, T, last=l == last)
        out["head"] += [(l, i, layer - layer_flops(config, h - 1, f, T, last=l == last)) for i in range(h)]
        out["neuron"] += [(l, i, layer - layer_flops(config, h, f - 1, T, last=l == last)) for i in range(f)]
        if config.n_layers > 1:
            without = Shape(config, seq_len, list(config.heads), config.ff_sizes, [j != l for j in range(last + 1)])
            out["layer"].append((l, l, full - without.flops()))
    return out


def priorities(config: ModelConfig, scores: dict[str, list[float]], seq_len: int | None = None) -> list[Unit]:
    """Every unit with its priority (step 4 of the rule), lowest first.

    Args:
        config: the current model's config.
        scores: ``{"layer": (L,), "head": flat over layers, "neuron": flat over layers}``, in the
            order of :func:`_costs` (layer by layer, index by index).
        seq_len: positions FLOPs are counted at (default: max_len).
    """
    units = []
    for kind, costs in _costs(config, seq_len).items():
        if not costs:
            continue
        q = rank_quantiles(scores[kind])
        mean = sum(c for _, _, c in costs) / len(costs)
        for (layer, index, saves), qi in zip(costs, q):
            priority = qi * mean / saves if saves > 0 else float("inf")
            units.append(Unit(kind, layer, index, priority, saves))
    return sorted(units, key=lambda u: (u.priority, KINDS.index(u.kind), u.layer, u.index))


def _take(unit: Unit, shape: Shape, min_heads: int) -> bool:
    """Remove ``unit`` from ``shape`` if the rule allows it; whether it did."""
    l = unit.layer
    if not shape.kept[l] or unit.saves <= 0:
        return False
    if unit.kind == "layer":
        if sum(shape.kept) == 1:
            return False
        shape.kept[l] = False
    elif unit.kind == "head":
        if shape.heads[l] <= min_heads:
            return False
        shape.heads[l] -= 1
    else:
        shape.d_ff[l] -= 1
    return True


def _overshoots(unit: Unit, shape: Shape, target: float) -> bool:
    """Whether dropping block ``unit`` would take the FLOPs below ``target`` (then heads and neurons,
    finer, finish the budget closer to it)."""
    if unit.kind != "layer" or not shape.kept[unit.layer]:
        return False
    shape.kept[unit.layer] = False
    below = shape.flops() < target
    shape.kept[unit.layer] = True
    return below


def greedy_plan(config: ModelConfig, units: list[Unit], target: float, seq_len: int | None = None,
                min_heads: int = 0) -> BudgetPlan:
    """Take ``units`` in order (step 5 of the rule) until FLOPs <= ``target``.

    A block whose removal would overshoot the target is passed over while finer units remain;
    passed-over blocks are taken (in order) only if the target is still missed at the end.

    Returns:
        The plan; ``plan.flops`` is above ``target`` only when every unit was taken.
    """
    shape, plan = Shape.of(config, seq_len), BudgetPlan()
    flops, passed = shape.flops(), []
    for unit in units:
        if flops <= target:
            break
        if _overshoots(unit, shape, target):
            passed.append(unit)
        elif _take(unit, shape, min_heads):
            plan.order.append(unit)
            flops = shape.flops()
    for unit in passed:
        if flops > target and _take(unit, shape, min_heads):
            plan.order.append(unit)
            flops = shape.flops()
    dropped = {l for l, k in enumerate(shape.kept) if not k}
    plan.layers = sorted(dropped)
    for kind, out in (("head", plan.heads), ("neuron", plan.neurons)):
        for u in plan.order:
            if u.kind == kind and u.layer not in dropped:
                out.setdefault(u.layer, []).append(u.index)
        for l in out:
            out[l].sort()
    plan.flops = flops
    return plan


def floor_flops(config: ModelConfig, seq_len: int | None = None, min_heads: int = 0) -> int:
    """The fewest FLOPs removal can reach: one block kept (the cheapest) with no neurons and
    ``min_heads`` heads (none by default), plus embeddings and classifier."""
    T = positions(config, seq_len)
    return base_flops(config, seq_len) + min(layer_flops(config, min(min_heads, h), 0, T, last=True)
                                             for h in config.heads)


def check_budget(fraction: float, config: ModelConfig, seq_len: int | None, min_heads: int, flag: str) -> None:
    """Refuse a FLOPs fraction at or below what removal can reach.

    Raises:
        MhsaError: ``fraction * FLOPs <= floor`` (see :func:`floor_flops`), or a ``seq_len`` above max_len.
    """
    if seq_len is not None and seq_len > config.max_len:
        raise MhsaError(f"--budget-seq-len {seq_len} exceeds the model's max_len {config.max_len}")
    full, floor = attention_flops(config, seq_len), floor_flops(config, seq_len, min_heads)
    if fraction * full <= floor:
        raise MhsaError(f"{flag} {fraction:g} is below what pruning can reach: embeddings, classifier and one "
                        f"block with {min_heads} heads are {floor / full:.4f} of the FLOPs; ask for more")


def step_target(fraction: float, full: int, step: int, k: int) -> float:
    """FLOPs step ``step`` of ``k`` aims at: ``full * (1 - (1 - fraction) * step / k)``."""
    return full * (1.0 - (1.0 - fraction) * step / k)


def score_units(cfg: PruneConfig, model: MHSAClassifier, data: TaskData | None,
                seed: int) -> tuple[dict[str, list[float]], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Scores of every head, neuron and block of ``model``: flat per kind, and as scored."""
    kw = dict(batch_size=cfg.batch_size, max_batches=cfg.importance_batches, seed=seed)
    heads = head_importance(model, data, cfg.method[0], normalize=cfg.normalize, **kw)
    neurons = neuron_importance(model, data, cfg.method[0], normalize=cfg.normalize, **kw)
    blocks = layer_importance(model, data, cfg.layer_method, **kw) if len(model.blocks) > 1 else torch.zeros(1)
    flat = {"head": [float(v) for s in heads for v in s], "neuron": [float(v) for s in neurons for v in s],
            "layer": [float(v) for v in blocks]}
    return flat, heads, neurons, blocks


def apply_plan(model: MHSAClassifier, plan: BudgetPlan, origin: Origin, row: dict[str, Any]) -> MHSAClassifier:
    """Drop the plan's blocks, then remove its heads and neurons; update ``origin`` and ``row``."""
    new = {old: i for i, old in enumerate(l for l in range(len(model.blocks)) if l not in plan.layers)}
    if plan.layers:
        row["layers_dropped"] = [origin.layers[l] for l in plan.layers]
        model = drop_layers(model, plan.layers)
        origin.drop(plan.layers)
    heads = {new[l]: sorted(idx) for l, idx in plan.heads.items()}
    neurons = {new[l]: sorted(idx) for l, idx in plan.neurons.items()}
    removed, origin.heads = Origin.take(origin.heads, heads)
    gone, origin.neurons = Origin.take(origin.neurons, neurons)
    row.update(removed=origin.per_original(removed), neurons_removed=origin.per_original(gone))
    model = remove_heads(model, heads) if heads else model
    return remove_neurons(model, neurons) if neurons else model


def budget_step(cfg: PruneConfig, model: MHSAClassifier, data: TaskData | None, step: int, origin: Origin,
                original: MHSAClassifier, progress: Progress, fraction: float) -> tuple[MHSAClassifier, dict]:
    """One budget step: score, plan greedily to this step's FLOPs target, remove (``origin`` is updated).

    Returns:
        The smaller model and the step's record (the keys of :func:`.plan.prune_step` plus ``budget``).
    """
    full = attention_flops(original.config, cfg.budget_seq_len)
    target = step_target(fraction, full, step, cfg.iterative)
    row: dict[str, Any] = {"step": step, "layers_dropped": []}
    with progress.task(f"importance and removal (step {step}, budget)", total=2) as bar:
        flat, heads, neurons, blocks = score_units(cfg, model, data, cfg.seed + step - 1)
        bar.advance(1)
        units = priorities(model.config, flat, cfg.budget_seq_len)
        plan = greedy_plan(model.config, units, target, cfg.budget_seq_len, cfg.min_heads_per_layer)
        row.update(scores=origin.per_original([s.tolist() for s in heads]),
                   neuron_scores=origin.per_original([s.tolist() for s in neurons]),
                   layer_scores=origin.per_original(blocks.tolist(), empty=None) if len(blocks) > 1 else None)
        model = apply_plan(model, plan, origin, row)
        bar.advance(1)
    row["budget"] = {"target_flops": target, "target_ratio": target / full, "flops": plan.flops,
                     "flops_ratio": plan.flops / full,
                     "taken": {k: sum(u.kind == k for u in plan.order) for k in KINDS}}
    row.update(heads=model.heads, d_ff=model.ff_sizes, layers=list(origin.layers))
    return model, row
