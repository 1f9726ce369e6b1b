"""Head importance criteria + physical head removal (``mhsa prune``).

Three steps, each a public function:

1. :func:`head_importance` scores every head on the **validation** split with a
   criterion from :data:`IMPORTANCE` (it is handed the validation split only, so
   the test split cannot leak into the choice of heads).
2. :func:`select_heads` picks the heads to remove from the scores: a count
   (``ratio`` of all heads, or ``n``), ranked across layers (``global``) or with
   the same fraction in every layer (``layer``), keeping ``min_heads_per_layer``.
3. :func:`remove_heads` deletes their weights (q/k/v output rows, output
   projection input columns), updates ``model.config.heads`` and proves with a
   forward pass that the pruned model equals the original with those heads
   gated to zero.

:func:`prune` is ``mhsa prune``: load, score, remove (optionally in several
steps with fine-tuning), save a checkpoint; or, with ``sweep``, the sensitivity
curve of Michel et al. (2019). It never prints; it returns a result dataclass.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (Checkpoint, atomic_dir, check_output_dir, load_checkpoint, load_model,
                         make_meta, save_model)
from .config import PruneConfig, to_dict
from .environment import resolve_device, set_threads
from .errors import MhsaError, choice
from .model import Attention, MHSAClassifier, attention_flops, count_parameters
from .progress import NULL, Progress
from .tasks import Split, TaskData, task_from_spec
from .train import LoopConfig, evaluate, fit

TOLERANCE = 1e-5  # max |logit difference| between pruned and head-gated original
Batches = list[tuple[torch.Tensor, torch.Tensor]]
# importance(model, validation batches, seed) -> one (H_l,) CPU tensor per layer
ImportanceFn = Callable[[MHSAClassifier, Batches, int], list[torch.Tensor]]


# --------------------------------------------------------------------------- importance

def _gradient(model: MHSAClassifier, batches: Batches, seed: int) -> list[torch.Tensor]:
    """Michel et al. (2019): mean over validation batches of |dL/d gate_h| at gate = 1."""
    device = next(model.parameters()).device
    gates = [torch.ones(h, device=device, requires_grad=True) for h in model.heads]  # (H_l,)
    live = [g for g in gates if g.numel()]  # 0-head layers ignore their gate
    total = [torch.zeros(h) for h in model.heads]
    for x, y in batches:
        loss = F.cross_entropy(model.forward_features(x, head_gates=gates).logits, y)
        grads = iter(torch.autograd.grad(loss, live)) if live else iter(())
        total = [t + next(grads).abs().cpu() if t.numel() else t for t in total]
    return [t / max(len(batches), 1) for t in total]


def _dependency_graph(model: MHSAClassifier) -> Any:
    """torch-pruning's dependency graph of ``model``, traced on a probe batch."""
    import torch_pruning as tp

    with warnings.catch_warnings():  # cls/pos are "unwrapped parameters": irrelevant here
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=probe_input(model, batch=2))


def _head_group(graph: Any, attn: Attention) -> Any:
    """The group coupling q/k/v output rows and o input columns of one layer.

    Raises:
        RuntimeError: torch-pruning coupled other layers too (the scores would be wrong).
    """
    import torch_pruning as tp

    group = graph.get_pruning_group(attn.q, tp.prune_linear_out_channels,
                                    idxs=list(range(attn.n_heads * attn.head_dim)))
    linears = {id(dep.target.module) for dep, _ in group if isinstance(dep.target.module, nn.Linear)}
    if linears != {id(attn.q), id(attn.k), id(attn.v), id(attn.o)}:
        raise RuntimeError("torch-pruning grouped an attention layer's heads with other layers")
    return group


def _tp_scores(model: MHSAClassifier, importance: Any, per_head: Callable) -> list[torch.Tensor]:
    """Per-channel group importance from torch-pruning, summed over each head's channels."""
    graph = _dependency_graph(model)
    out = []
    for block in model.blocks:
        a = block.attn
        if a.n_heads == 0:
            out.append(torch.zeros(0))
            continue
        channels = importance(_head_group(graph, a))  # (H*S,) summed over q, k, v rows and o columns
        out.append(per_head(channels.detach().float().cpu().view(a.n_heads, a.head_dim).sum(1)))
    return out


def _magnitude(model: MHSAClassifier, batches: Batches, seed: int) -> list[torch.Tensor]:
    """L2 norm of each head's weights: its q/k/v output rows and o input columns (no biases).

    Computed with ``tp.importance.GroupMagnitudeImportance(p=2)`` over the
    dependency group of q/k/v/o (per-channel sums of squares), then per head
    ``sqrt(sum over the head's channels)``. Needs no data.
    """
    import torch_pruning as tp

    imp = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
    return _tp_scores(model, imp, torch.sqrt)


def _taylor(model: MHSAClassifier, batches: Batches, seed: int) -> list[torch.Tensor]:
    """First-order Taylor (Molchanov et al. 2019): sum of |w * dL/dw| over a head's weights.

    The gradient is that of the mean validation loss over the importance
    batches; the per-weight products come from
    ``tp.importance.GroupTaylorImportance`` over the q/k/v/o group.
    """
    import torch_pruning as tp

    model.zero_grad(set_to_none=True)
    try:
        for x, y in batches:
            (F.cross_entropy(model(x), y) / len(batches)).backward()  # mean-loss gradient in .grad
        imp = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
        return _tp_scores(model, imp, lambda s: s)
    finally:
        model.zero_grad(set_to_none=True)


def _random(model: MHSAClassifier, batches: Batches, seed: int) -> list[torch.Tensor]:
    """Uniform random scores from ``seed``: the control every criterion must beat."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(h, generator=gen) for h in model.heads]


IMPORTANCE: dict[str, ImportanceFn] = {
    "gradient": _gradient,
    "taylor": _taylor,
    "magnitude": _magnitude,
    "random": _random,
}
NORMALIZED = frozenset({"gradient", "taylor"})  # --normalize applies to these
NEEDS_DATA = frozenset({"gradient", "taylor"})
SEEDED = frozenset({"random"})  # a sweep runs these with several seeds


def normalize_per_layer(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Divide each layer's scores by their L2 norm (Michel et al., section 4.1)."""
    return [s / s.norm().clamp(min=1e-20) if s.numel() else s for s in scores]


def validation_batches(split: Split, batch_size: int, max_batches: int = 0,
                       device: torch.device | str = "cpu") -> Batches:
    """The first ``max_batches`` (0 = all) fixed-order batches of ``split``, on ``device``."""
    n = len(split) if not max_batches else min(len(split), max_batches * batch_size)
    return [(split.x[i: i + batch_size].to(device), split.y[i: i + batch_size].to(device))
            for i in range(0, n, batch_size)]


def head_importance(model: MHSAClassifier, data: Split | TaskData, method: str, *,
                    batch_size: int = 64, max_batches: int = 0, normalize: bool = True,
                    seed: int = 0) -> list[torch.Tensor]:
    """Score every head of ``model``; higher = more important.

    Args:
        model: a float model (left unchanged, in its original train/eval mode).
        data: the **validation** split, or a :class:`TaskData` whose ``val`` split is used.
            The test split is never read.
        method: a key of :data:`IMPORTANCE`.
        batch_size: validation batch size (gradients are per batch, as Michel et al.).
        max_batches: use only the first batches (0 = the whole split).
        normalize: L2-normalise scores within each layer (gradient and taylor only).
        seed: seed of the ``random`` method.

    Returns:
        One float tensor ``(H_l,)`` per layer, on CPU (empty for a 0-head layer).

    Raises:
        MhsaError: unknown method, or scores that are not finite.

    Example:
        >>> scores = head_importance(model, data.val, "gradient")  # doctest: +SKIP
    """
    fn = IMPORTANCE[choice("importance method", method, IMPORTANCE)]
    split = data.val if isinstance(data, TaskData) else data
    device = next(model.parameters()).device
    batches = validation_batches(split, batch_size, max_batches, device) if method in NEEDS_DATA else []
    was_training = model.training
    model.eval()  # no dropout while scoring
    try:
        scores = fn(model, batches, seed)
    finally:
        model.train(was_training)
    if any(not torch.isfinite(s).all() for s in scores):
        raise MhsaError(f"'{method}' importance produced non-finite scores (diverged model?)")
    return normalize_per_layer(scores) if normalize and method in NORMALIZED else scores


# --------------------------------------------------------------------------- selection

def heads_to_remove_count(counts: list[int], ratio: float | None = None, n: int | None = None) -> int:
    """``n`` if given, else ``floor(ratio * total)`` (so ratio < 1 never removes every head).

    Raises:
        MhsaError: ratio outside [0, 1), or more heads than the model has.
    """
    total = sum(counts)
    if n is None:
        if ratio is None or not 0.0 <= ratio < 1.0:
            raise MhsaError(f"--ratio must be in [0, 1), got {ratio}")
        return math.floor(ratio * total + 1e-9)
    if n < 0 or n > total:
        raise MhsaError(f"--heads {n}: the model has {total} heads ({'+'.join(map(str, counts))})")
    return n


def _room(counts: list[int], min_heads: int, n: int) -> list[int]:
    """Heads each layer may lose; raises if ``min_heads`` or ``n`` cannot be honoured."""
    for layer, h in enumerate(counts):
        if min_heads > h:
            raise MhsaError(f"--min-heads-per-layer {min_heads} is larger than layer {layer}'s {h} heads")
    room = [h - min_heads for h in counts]
    if n > sum(room):
        raise MhsaError(f"cannot remove {n} heads: only {sum(room)} of {sum(counts)} can go "
                        f"with --min-heads-per-layer {min_heads}")
    return room


def _ascending(s: torch.Tensor) -> list[int]:
    return sorted(range(len(s)), key=lambda h: (float(s[h]), h))


def _select_global(scores: list[torch.Tensor], n: int, room: list[int]) -> list[list[int]]:
    """The ``n`` lowest scores across all layers, skipping layers that reached their floor."""
    ranked = sorted((float(s[h]), layer, h) for layer, s in enumerate(scores) for h in range(len(s)))
    removed: list[list[int]] = [[] for _ in scores]
    for _, layer, h in ranked:
        if sum(map(len, removed)) == n:
            break
        if len(removed[layer]) < room[layer]:
            removed[layer].append(h)
    return removed


def _select_layer(scores: list[torch.Tensor], n: int, room: list[int]) -> list[list[int]]:
    """The same fraction in every layer: each removal goes to the layer whose removed
    fraction would stay lowest (ties: the layer whose next head scores lowest)."""
    order = [_ascending(s) for s in scores]
    taken = [0] * len(scores)
    for _ in range(n):
        layer = min((l for l in range(len(scores)) if taken[l] < room[l]),
                    key=lambda l: ((taken[l] + 1) / len(scores[l]), float(scores[l][order[l][taken[l]]]), l))
        taken[layer] += 1
    return [o[:t] for o, t in zip(order, taken)]


SCOPES: dict[str, Callable[[list[torch.Tensor], int, list[int]], list[list[int]]]] = {
    "global": _select_global,
    "layer": _select_layer,
}


def select_heads(scores: list[torch.Tensor], ratio: float | None = None, n: int | None = None,
                 scope: str = "global", min_heads_per_layer: int = 0) -> dict[int, list[int]]:
    """Pick the least important heads.

    Args:
        scores: one ``(H_l,)`` tensor per layer (higher = more important).
        ratio: fraction of all heads to remove, in [0, 1); floored to a count.
        n: number of heads to remove (overrides ``ratio``).
        scope: ``global`` ranks all heads together; ``layer`` removes the same
            fraction from each layer (as near as whole heads allow), lowest scores first.
        min_heads_per_layer: no layer drops below this many heads (0: a layer may lose all).

    Returns:
        ``{layer: sorted head indices to remove}`` for every layer (empty lists included).

    Raises:
        MhsaError: bad ratio/count, unknown scope, or constraints that cannot be met.
    """
    counts = [len(s) for s in scores]
    count = heads_to_remove_count(counts, ratio, n)
    room = _room(counts, min_heads_per_layer, count)
    removed = SCOPES[choice("scope", scope, SCOPES)](scores, count, room)
    return {layer: sorted(idx) for layer, idx in enumerate(removed)}


# --------------------------------------------------------------------------- removal

def probe_input(model: MHSAClassifier, batch: int = 8, seed: int = 0) -> torch.Tensor:
    """A fixed random input batch for ``model`` (tokens with varied padding, or features)."""
    c, gen = model.config, torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    if c.input_kind == "features":
        return torch.randn(batch, c.max_len, c.feature_dim, generator=gen).to(device)  # (B, T, F)
    x = torch.randint(1, c.vocab_size, (batch, c.max_len), generator=gen)  # (B, T)
    lengths = torch.randint(1, c.max_len + 1, (batch, 1), generator=gen)
    x[torch.arange(c.max_len)[None, :] >= lengths] = 0  # padding exercises the attention mask
    return x.to(device)


def _slice_attention(attn: Attention, keep: list[int]) -> Attention:
    """A new Attention holding only heads ``keep`` (all-removed: just the output bias)."""
    d_model, S, o = attn.o.out_features, attn.head_dim, attn.o
    new = Attention(d_model, len(keep), S, attn.dropout).to(o.weight.device, o.weight.dtype)
    with torch.no_grad():
        if not keep:
            new.o_bias.copy_(o.bias)  # gated-to-zero heads leave exactly o.bias
            return new
        rows = torch.cat([torch.arange(h * S, (h + 1) * S) for h in keep]).to(o.weight.device)  # (H'*S,)
        for name in ("q", "k", "v"):
            old, lin = getattr(attn, name), getattr(new, name)
            lin.weight.copy_(old.weight[rows])  # (H'*S, D)
            lin.bias.copy_(old.bias[rows])
        new.o.weight.copy_(o.weight[:, rows])  # (D, H'*S)
        new.o.bias.copy_(o.bias)
    return new


def check_structure(model: MHSAClassifier) -> None:
    """Check that ``config.heads`` matches every layer's modules and weight shapes.

    Raises:
        RuntimeError: a stale head count or a mis-shaped projection.
    """
    c = model.config
    if model.heads != c.heads:
        raise RuntimeError(f"head counts out of sync: modules {model.heads}, config {c.heads}")
    for layer, block in enumerate(model.blocks):
        a, inner = block.attn, block.attn.n_heads * c.head_dim
        expected = {"q": (inner, c.d_model), "k": (inner, c.d_model), "v": (inner, c.d_model),
                    "o": (c.d_model, inner)} if a.n_heads else {}
        for name, shape in expected.items():
            if tuple(getattr(a, name).weight.shape) != shape:
                raise RuntimeError(f"layer {layer}: {name}.weight is {tuple(getattr(a, name).weight.shape)}, "
                                   f"expected {shape}")
        if not a.n_heads and tuple(a.o_bias.shape) != (c.d_model,):
            raise RuntimeError(f"layer {layer}: o_bias has shape {tuple(a.o_bias.shape)}")


def gates_for(heads: list[int], removed: dict[int, list[int]], device: Any = "cpu") -> list[torch.Tensor]:
    """Head gates (one ``(H_l,)`` tensor per layer): 0 for removed heads, 1 otherwise."""
    gates = [torch.ones(h, device=device) for h in heads]
    for layer, idx in removed.items():
        gates[layer][list(idx)] = 0.0
    return gates


def max_logit_gap(original: MHSAClassifier, pruned: MHSAClassifier, removed: dict[int, list[int]],
                  x: torch.Tensor) -> float:
    """max |pruned(x) - original(x with removed heads gated to 0)| over logits (eval mode)."""
    modes = [(m, m.training) for m in (original, pruned)]
    for m, _ in modes:
        m.eval()
    with torch.inference_mode():
        gates = gates_for(original.heads, removed, x.device)
        ref = original.forward_features(x, head_gates=gates).logits  # (B, C)
        gap = float((pruned(x) - ref).abs().max())
    for m, was in modes:
        m.train(was)
    return gap


def _check_removal(model: MHSAClassifier, removed: dict[int, list[int]]) -> None:
    for layer, idx in removed.items():
        if not 0 <= layer < model.config.n_layers:
            raise MhsaError(f"layer {layer} does not exist (the model has {model.config.n_layers})")
        h = model.heads[layer]
        if len(set(idx)) != len(idx) or any(not 0 <= i < h for i in idx):
            raise MhsaError(f"layer {layer}: bad head indices {list(idx)} (it has {h} heads)")


def remove_heads(model: MHSAClassifier, heads_to_remove: dict[int, list[int]]) -> MHSAClassifier:
    """Physically remove heads; return a new model (``model`` is not modified).

    Deletes the q/k/v output rows (and biases) and the output-projection input
    columns of each removed head; a layer that loses every head becomes
    ``Attention(n_heads=0)`` carrying the old ``o.bias``. The new model's
    ``config.heads`` is updated, its shapes are checked, and a forward pass on
    a probe batch must match the original with the same heads gated to zero.

    Args:
        model: a float :class:`MHSAClassifier`.
        heads_to_remove: ``{layer: head indices}`` in the model's current numbering.

    Returns:
        The pruned model (same device and train/eval mode).

    Raises:
        MhsaError: a layer or head index that does not exist.
        RuntimeError: the pruned model's logits differ from the gated original's by
            more than :data:`TOLERANCE`, or its shapes disagree with its config.
    """
    _check_removal(model, heads_to_remove)
    pruned = copy.deepcopy(model)
    for layer, idx in heads_to_remove.items():
        if idx:
            gone = set(idx)
            keep = [h for h in range(model.heads[layer]) if h not in gone]
            pruned.blocks[layer].attn = _slice_attention(model.blocks[layer].attn, keep)
    pruned.config = dataclasses.replace(model.config, heads=pruned.heads).validate()
    check_structure(pruned)
    gap = max_logit_gap(model, pruned, heads_to_remove, probe_input(model))
    if not gap <= TOLERANCE:
        raise RuntimeError(f"head removal changed the model: max |logit gap| {gap:.3g} > {TOLERANCE}")
    return pruned


# --------------------------------------------------------------------------- the command

@dataclass
class Accuracy:
    val_acc: float
    test_acc: float


@dataclass
class PruneResult:
    """What :func:`prune` returns without ``sweep`` (rendered by report.prune)."""

    out: str
    method: str
    scope: str
    scores: list[list[float]]  # first step's scores, original numbering, per layer
    removed: list[list[int]]  # original head indices removed, per layer
    heads_before: list[int]
    heads_after: list[int]
    params_before: int
    params_after: int
    flops_before: int  # per sample at max_len (see model.attention_flops)
    flops_after: int
    before: Accuracy
    pruned: Accuracy  # after the last removal, before its fine-tuning
    finetuned: Accuracy | None  # after the last fine-tuning (None without --finetune-epochs)
    steps: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult:
    """What :func:`prune` returns with ``sweep``: test accuracy per ratio and method."""

    out: str
    methods: list[str]
    ratios: list[float]
    scope: str
    seeds: list[int]  # seeds of the random method
    baseline: Accuracy
    cells: list[dict[str, Any]]  # one per (ratio, method); see _cell
    files: list[str] = field(default_factory=list)


def _load_float(path: str) -> Checkpoint:
    ckpt = load_checkpoint(path)
    if ckpt.kind == "int8":
        raise MhsaError("cannot prune an int8 checkpoint: prune before quantizing")
    return ckpt


def _validate(cfg: PruneConfig, heads: list[int]) -> None:
    """All input checks that need only the config and the head counts (before any work)."""
    if not cfg.method:
        raise MhsaError("--method is empty; choose from: " + ", ".join(IMPORTANCE))
    for m in cfg.method:
        choice("importance method", m, IMPORTANCE)
    if cfg.sweep is None:
        if len(cfg.method) > 1:
            raise MhsaError(f"several methods ({', '.join(cfg.method)}) need --sweep; prune with one")
        select_heads([torch.zeros(h) for h in heads], cfg.ratio, cfg.heads, cfg.scope, cfg.min_heads_per_layer)
        return
    if not cfg.sweep:
        raise MhsaError("--sweep needs at least one ratio, e.g. 0,0.25,0.5")
    if cfg.heads is not None or cfg.finetune_epochs or cfg.iterative > 1:
        raise MhsaError("--sweep measures accuracy without fine-tuning at each ratio; "
                        "drop --heads, --finetune-epochs and --iterative")
    for ratio in cfg.sweep:
        select_heads([torch.zeros(h) for h in heads], ratio, None, cfg.scope, cfg.min_heads_per_layer)


def _accuracy(model: nn.Module, data: TaskData, device: torch.device) -> Accuracy:
    return Accuracy(evaluate(model, data.val, device), evaluate(model, data.test, device))


def prune(cfg: PruneConfig, progress: Progress = NULL) -> PruneResult | SweepResult:
    """Score heads on the validation split and remove the least important (``mhsa prune``).

    Without ``cfg.sweep``: remove ``cfg.heads`` (or ``cfg.ratio`` of all) heads
    in ``cfg.iterative`` steps, each re-scored and followed by
    ``cfg.finetune_epochs`` of fine-tuning, and save a float checkpoint (with
    ``head_importance.json``) in ``cfg.out``. With ``cfg.sweep``: for each
    ratio and method, the test accuracy without fine-tuning, written to
    ``sweep.json`` / ``sweep.csv`` / ``sweep.png`` in ``cfg.out`` (``cfg.ratio``
    is not used; ``--random-seeds`` seeds for ``random``, starting at ``cfg.seed``).

    Raises:
        MhsaError: an int8 checkpoint, a bad ratio/count/min-heads/method, or an
            output folder that exists (without ``force``); nothing is written.
    """
    set_threads(cfg.threads)
    check_output_dir(cfg.out, cfg.force)
    ckpt = _load_float(cfg.checkpoint)
    _validate(cfg, ckpt.model_config.heads)
    device = resolve_device(cfg.device)
    data = task_from_spec(ckpt.task_spec)
    model = load_model(ckpt).to(device)
    run = _sweep if cfg.sweep is not None else _prune_steps
    return run(cfg, ckpt, model, data, device, progress)


def _score(cfg: PruneConfig, model: MHSAClassifier, data: TaskData, method: str, seed: int,
           progress: Progress) -> list[torch.Tensor]:
    with progress.task(f"importance ({method})", total=1) as bar:
        scores = head_importance(model, data.val, method, batch_size=cfg.batch_size,
                                 max_batches=cfg.importance_batches, normalize=cfg.normalize, seed=seed)
        bar.advance(1)
    return scores


def _finetune(cfg: PruneConfig, model: MHSAClassifier, data: TaskData, device: torch.device,
              progress: Progress, step: int) -> dict[str, Any]:
    loop = dataclasses.replace(LoopConfig.from_config(cfg), epochs=cfg.finetune_epochs)
    fitted = fit(model, data, loop, device, progress=progress, desc=f"fine-tune (step {step})")
    return {"finetune_best_epoch": fitted.best_epoch, "finetune_seconds": fitted.seconds,
            "finetune_history": fitted.history}


def _step(cfg: PruneConfig, model: MHSAClassifier, data: TaskData, device: torch.device,
          progress: Progress, step: int, n: int, origin: list[list[int]]) -> tuple[MHSAClassifier, dict]:
    """One step: score, remove ``n`` heads, fine-tune (if asked); the new model and its record.

    ``origin[l][h]`` is the original index of layer l's current head h; the
    record's ``removed`` uses original indices, ``scores`` the current ones.
    """
    scores = _score(cfg, model, data, cfg.method[0], cfg.seed + step - 1, progress)
    chosen = select_heads(scores, n=n, scope=cfg.scope, min_heads_per_layer=cfg.min_heads_per_layer)
    model = remove_heads(model, chosen)
    pruned = _accuracy(model, data, device)
    row = {"step": step, "scores": [s.tolist() for s in scores], "heads": model.heads,
           "removed": [[origin[l][h] for h in chosen[l]] for l in range(len(origin))],
           "val_acc_pruned": pruned.val_acc, "test_acc_pruned": pruned.test_acc}
    if cfg.finetune_epochs:
        row.update(_finetune(cfg, model, data, device, progress, step))
        tuned = _accuracy(model, data, device)
        row.update(val_acc_finetuned=tuned.val_acc, test_acc_finetuned=tuned.test_acc)
    return model, row


def _prune_steps(cfg: PruneConfig, ckpt: Checkpoint, model: MHSAClassifier, data: TaskData,
                 device: torch.device, progress: Progress) -> PruneResult:
    """Prune in ``cfg.iterative`` steps (re-scoring the smaller model each time); then save."""
    original, k = model, cfg.iterative
    total = heads_to_remove_count(model.heads, cfg.ratio, cfg.heads)
    origin = [list(range(h)) for h in model.heads]  # original index of each current head
    steps = []
    for step in range(1, k + 1):
        n = total * step // k - total * (step - 1) // k
        model, row = _step(cfg, model, data, device, progress, step, n, origin)
        origin = [[h for h in o if h not in gone] for o, gone in zip(origin, row["removed"])]
        steps.append(row)
        progress.log(f"step {step}/{k}: removed {n} heads, heads per layer {model.heads}")
    last = steps[-1]
    result = PruneResult(
        cfg.out, cfg.method[0], cfg.scope, steps[0]["scores"],
        [sorted(h for s in steps for h in s["removed"][l]) for l in range(len(origin))],
        original.heads, model.heads, count_parameters(original), count_parameters(model),
        attention_flops(original.config), attention_flops(model.config), _accuracy(original, data, device),
        Accuracy(last["val_acc_pruned"], last["test_acc_pruned"]),
        Accuracy(last["val_acc_finetuned"], last["test_acc_finetuned"]) if cfg.finetune_epochs else None,
        steps, task=data.summary())
    result.files = _save_pruned(cfg, ckpt, model, result)
    return result


def _importance_doc(cfg: PruneConfig, r: PruneResult) -> dict[str, Any]:
    """Content of ``head_importance.json``."""
    return {"method": r.method, "split": "val", "normalize": cfg.normalize and r.method in NORMALIZED,
            "importance_batches": cfg.importance_batches, "batch_size": cfg.batch_size, "seed": cfg.seed,
            "scope": r.scope, "heads_before": r.heads_before, "heads_after": r.heads_after,
            "scores": r.scores, "removed": r.removed,
            "kept": [[h for h in range(n) if h not in r.removed[l]] for l, n in enumerate(r.heads_before)],
            "steps": [{"step": s["step"], "scores": s["scores"], "removed": s["removed"]} for s in r.steps]}


def _metrics(r: PruneResult) -> dict[str, Any]:
    final = r.finetuned or r.pruned
    return {"val_acc": final.val_acc, "test_acc": final.test_acc, "params": r.params_after,
            "flops": r.flops_after, "heads": r.heads_after, "heads_removed": sum(map(len, r.removed)),
            "params_before": r.params_before, "flops_before": r.flops_before,
            "accuracy_before": dataclasses.asdict(r.before), "accuracy_pruned": dataclasses.asdict(r.pruned),
            "accuracy_finetuned": dataclasses.asdict(r.finetuned) if r.finetuned else None}


def _save_pruned(cfg: PruneConfig, ckpt: Checkpoint, model: MHSAClassifier, r: PruneResult) -> list[str]:
    """Write the checkpoint (+ head_importance.json, + .png with matplotlib); return the files."""
    from .report import write_atomic
    from .report.prune import heatmap_png

    meta = make_meta("float", model.config, ckpt.task_spec, "prune", to_dict(cfg), _metrics(r),
                     parent=ckpt, extra={"steps": r.steps})
    out = save_model(cfg.out, model.cpu(), meta, force=cfg.force,
                     extra_files={"head_importance.json": _importance_doc(cfg, r)})
    files = [str(out / "model.safetensors"), str(out / "checkpoint.json"), str(out / "head_importance.json")]
    png = heatmap_png(r.scores, r.removed, f"head importance ({r.method}, validation split)")
    if png is not None:  # bytes cannot go through save_model's extra_files; written atomically after
        files.append(str(write_atomic(out / "head_importance.png", png)))
    return files


# --------------------------------------------------------------------------- sweep

def _run(seed: int, model: MHSAClassifier, data: TaskData, device: torch.device) -> dict[str, Any]:
    """What a sweep keeps of one pruned model."""
    acc = _accuracy(model, data, device)
    return {"seed": seed, "val_acc": acc.val_acc, "test_acc": acc.test_acc, "heads": model.heads,
            "params": count_parameters(model), "flops": attention_flops(model.config)}


def _cell(ratio: float, method: str, heads_before: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One sweep cell: test accuracy of each seed's pruned model, with mean and spread."""
    tests, first = [r["test_acc"] for r in runs], runs[0]  # every seed removes as many heads
    return {"ratio": ratio, "method": method, "heads_removed": heads_before - sum(first["heads"]),
            "seeds": [r["seed"] for r in runs], "test_acc": tests, "test_acc_mean": statistics.fmean(tests),
            "test_acc_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "val_acc_mean": statistics.fmean(r["val_acc"] for r in runs),
            "heads": [r["heads"] for r in runs], "params": first["params"], "flops": first["flops"]}


def _sweep(cfg: PruneConfig, ckpt: Checkpoint, model: MHSAClassifier, data: TaskData,
           device: torch.device, progress: Progress) -> SweepResult:
    """Test accuracy without fine-tuning for every (ratio, method); random over several seeds."""
    seeds = [cfg.seed + i for i in range(cfg.random_seeds)]
    runs: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for method in cfg.method:
        for seed in seeds if method in SEEDED else [cfg.seed]:
            scores = _score(cfg, model, data, method, seed, progress)
            for ratio in cfg.sweep:
                chosen = select_heads(scores, ratio, None, cfg.scope, cfg.min_heads_per_layer)
                pruned = remove_heads(model, chosen)
                runs.setdefault((ratio, method), []).append(_run(seed, pruned, data, device))
            progress.log(f"sweep: {method} (seed {seed}) done")
    cells = [_cell(r, m, sum(model.heads), runs[(r, m)]) for r in cfg.sweep for m in cfg.method]
    result = SweepResult(cfg.out, list(cfg.method), list(cfg.sweep), cfg.scope,
                         seeds if SEEDED & set(cfg.method) else [], _accuracy(model, data, device), cells)
    result.files = _save_sweep(cfg, ckpt, result)
    return result


def _save_sweep(cfg: PruneConfig, ckpt: Checkpoint, r: SweepResult) -> list[str]:
    """Write sweep.json, sweep.csv (and sweep.png with matplotlib) into ``cfg.out`` in one rename."""
    import json

    from .report import csv_text
    from .report.prune import sweep_csv_rows, sweep_png

    doc = {"checkpoint": str(ckpt.path), "checkpoint_id": ckpt.meta.get("id"), "split": "test",
           "finetuned": False, "settings": to_dict(cfg), "baseline": dataclasses.asdict(r.baseline),
           "scope": r.scope, "ratios": r.ratios, "methods": r.methods, "seeds": r.seeds, "cells": r.cells}
    files = {"sweep.json": json.dumps(doc, indent=2) + "\n", "sweep.csv": csv_text(*sweep_csv_rows(r))}
    png = sweep_png(r)
    if png is not None:
        files["sweep.png"] = png

    def write(tmp: Path) -> None:
        for name, content in files.items():
            (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))

    out = atomic_dir(Path(cfg.out), cfg.force, write)
    return [str(out / name) for name in files]
