"""``mhsa prune``: load, score, remove, fine-tune, save; or a sensitivity sweep.

:func:`prune` scores heads (:mod:`.importance`), picks the least important
(:mod:`.select`) and removes them (:mod:`.surgery`), optionally in several steps
with fine-tuning, and saves a checkpoint (:class:`PruneResult`); with ``sweep``
it measures the sensitivity curve of Michel et al. (2019) instead
(:class:`SweepResult`). It never prints; it returns a result dataclass.

Data (:mod:`.data`): ``--data FILE``, else the checkpoint's own. Only scoring
by gradient or taylor (heads, neurons) or by loss (blocks), fine-tuning and a
sweep need it; magnitude and random prune a checkpoint without data, its
accuracy then left out with the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import (Checkpoint, atomic_dir, check_output_dir, load_checkpoint, load_model, training_loop,
                          make_meta, save_model, write_files)
from ..config import PruneConfig, resolve_loop, to_dict
from ..environment import resolve_device, set_threads
from ..errors import MhsaError, choice
from ..model import MHSAClassifier, ModelConfig, attention_flops, count_parameters
from ..progress import NULL, Progress
from ..tasks import TaskData
from ..train import LoopConfig, evaluate, fit, loop_text, split_report
from .data import prune_data
from .budget import budget_step, check_budget
from .importance import IMPORTANCE, NEEDS_DATA, SEEDED, head_importance
from .kd import KDTeacher, kd_enabled, kd_plan, kd_teacher, prune_loss_fn, teacher_source
from .latency import budget_doc, choose_fraction
from .layers import LAYER_NEEDS_DATA
from .plan import Origin, prune_step, validate_plan
from .record import importance_doc, light_steps, metrics_doc, pruning_doc
from .select import select_heads
from .surgery import remove_heads


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
    flops_before: int  # per sample at flops_seq_len positions (see model.attention_flops)
    flops_after: int
    before: Accuracy | None  # None: no data (accuracy_not_measured says why)
    pruned: Accuracy | None  # after the last removal, before its fine-tuning
    finetuned: Accuracy | None  # after the last fine-tuning (None without --finetune-epochs)
    steps: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)
    test_classes: dict[str, Any] | None = None  # per-class metrics of the final model (ClassReport JSON)
    d_ff_before: list[int] = field(default_factory=list)  # per original layer
    d_ff_after: list[int] = field(default_factory=list)  # per kept layer
    neurons_removed: list[list[int]] = field(default_factory=list)  # original indices, per original layer
    layers_dropped: list[int] = field(default_factory=list)  # original indices
    layers_kept: list[int] = field(default_factory=list)  # original index of each kept layer
    layer_scores: list[float | None] | None = None  # scores of the first step that chose blocks
    accuracy_not_measured: str | None = None  # why, without data ("no data", "no data: file ... not found")
    scored_on: str = "validation split"  # what the head scores read: "validation split", or "no data"
    budget: dict[str, Any] | None = None  # budget mode: the rule, FLOPs and latency, what each kind lost
    layers_scored_on: str = "validation split"  # the same for block scores (loss; random: "no data")
    flops_seq_len: int | None = None  # positions FLOPs were counted at (None: the model's max_len)
    kd: dict[str, Any] | None = None  # KD fine-tuning: teacher, weights, block pairs (None: off)


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


def data_len(ckpt: Checkpoint) -> int | None:
    """Positions FLOPs are counted at: the task's ``max_len`` when the checkpoint's data set a shorter
    one than the model's (an imported encoder has 512 positions; trec rows need 28), else None (max_len)."""
    n = ckpt.task_spec.get("max_len")
    return n if isinstance(n, int) and 0 < n < ckpt.model_config.max_len else None


def _load_float(path: str) -> Checkpoint:
    ckpt = load_checkpoint(path)
    ckpt.require_kind("float", "prune", "prune before quantizing")
    return ckpt


def _validate(cfg: PruneConfig, config: ModelConfig) -> None:
    """All input checks that need only the config and the model's shape (before any work)."""
    heads = config.heads
    validate_plan(cfg, len(heads))
    if cfg.budget:
        check_budget(getattr(cfg, cfg.budget), config, cfg.budget_seq_len, cfg.min_heads_per_layer,
                     "--" + cfg.budget.replace("_", "-"))
    if not cfg.method:
        raise MhsaError("--method is empty; choose from: " + ", ".join(IMPORTANCE))
    for m in cfg.method:
        choice("importance method", m, IMPORTANCE)
    if cfg.sweep is None:
        if len(cfg.method) > 1:
            raise MhsaError(f"several methods ({', '.join(cfg.method)}) need --sweep; prune with one")
        if cfg.budget:
            return
        select_heads([torch.zeros(h) for h in heads], cfg.ratio, cfg.heads, cfg.scope, cfg.min_heads_per_layer)
        return
    if not cfg.sweep:
        raise MhsaError("--sweep needs at least one ratio, e.g. 0,0.25,0.5")
    if cfg.heads is not None or cfg.finetune_epochs or cfg.iterative > 1:
        raise MhsaError("--sweep measures accuracy without fine-tuning at each ratio; "
                        "drop --heads, --finetune-epochs and --iterative")
    if cfg.ffn_ratio or cfg.drop_layers or cfg.drop_layers_at:
        raise MhsaError("--sweep removes heads only; drop --ffn-ratio, --drop-layers and --drop-layers-at")
    for ratio in cfg.sweep:
        select_heads([torch.zeros(h) for h in heads], ratio, None, cfg.scope, cfg.min_heads_per_layer)


def _accuracy(model: nn.Module, data: TaskData | None, device: torch.device) -> Accuracy | None:
    if data is None:
        return None
    return Accuracy(evaluate(model, data.val, device), evaluate(model, data.test, device))


def prune(cfg: PruneConfig, progress: Progress = NULL) -> PruneResult | SweepResult:
    """Score heads, neurons and blocks on the validation split and remove the least important.

    Without ``cfg.sweep``: in ``cfg.iterative`` steps, each re-scored and followed by
    ``cfg.finetune_epochs`` of fine-tuning, drop ``cfg.drop_layers`` blocks (or
    ``cfg.drop_layers_at``), remove ``cfg.heads`` (or ``cfg.ratio``) of the kept layers'
    heads and ``cfg.ffn_ratio`` of their feed-forward neurons (see :mod:`.plan`), and save
    a float checkpoint (with ``head_importance.json`` and ``pruning.json``) in ``cfg.out``; with
    ``cfg.target_flops`` / ``cfg.target_latency`` the amounts come from the budget rule
    (:mod:`.budget`, :mod:`.latency`) instead, and with ``cfg.kd_weight`` / ``cfg.kd_hidden_weight``
    fine-tuning distils from the unpruned model (:mod:`.kd`). With ``cfg.sweep``: for each
    ratio and method, the test accuracy without fine-tuning, written to
    ``sweep.json`` / ``sweep.csv`` / ``sweep.png`` in ``cfg.out`` (``cfg.ratio``
    is not used; ``--random-seeds`` seeds for ``random``, starting at ``cfg.seed``).

    Data: see the module docstring.

    Raises:
        MhsaError: an int8 checkpoint, a bad ratio/count/min-heads/method, dropping every
            block, no data where it is needed (gradient, taylor, loss, fine-tuning, a sweep),
            an unreadable ``--data``, or an output folder that exists (without ``force``);
            nothing is written.
    """
    set_threads(cfg.threads)
    check_output_dir(cfg.out, cfg.force, inputs=[cfg.checkpoint, *([cfg.kd_teacher] if cfg.kd_teacher else [])])
    ckpt = _load_float(cfg.checkpoint)
    if cfg.token_dropout and ckpt.task_spec.get("name") != "text":
        raise MhsaError("--token-dropout replaces words by <unk>, which only mhsa's own text task numbers "
                        f"(id 1), not '{ckpt.task_spec.get('name')}': drop --token-dropout")
    resolve_loop(cfg, training_loop(ckpt.meta), lr=1e-3)  # fine-tuning resumes the checkpoint's training
    cfg.budget_seq_len = cfg.budget_seq_len or data_len(ckpt)
    _validate(cfg, ckpt.model_config)
    source = teacher_source(cfg, ckpt)  # --kd-teacher and the block pairs, checked before any work
    device = resolve_device(cfg.device)
    data, why = prune_data(cfg, ckpt)
    model = load_model(ckpt).to(device)
    if cfg.sweep is not None:
        return _sweep(cfg, ckpt, model, data, device, progress)
    return _prune_steps(cfg, ckpt, model, data, device, progress, why, source)


def _score(cfg: PruneConfig, model: MHSAClassifier, data: TaskData | None, method: str, seed: int,
           progress: Progress) -> list[torch.Tensor]:
    with progress.task(f"importance ({method})", total=1) as bar:
        scores = head_importance(model, data, method, batch_size=cfg.batch_size,
                                 max_batches=cfg.importance_batches, normalize=cfg.normalize, seed=seed)
        bar.advance(1)
    return scores


def _finetune(cfg: PruneConfig, model: MHSAClassifier, data: TaskData, device: torch.device,
              progress: Progress, step: int, teacher: KDTeacher | None, kept: list[int]) -> dict[str, Any]:
    """Fine-tune after a step: cross-entropy, or with ``teacher`` the KD loss of :mod:`.kd`.

    Torch's random stream (dropout, word dropout, mixup) is seeded from ``cfg.seed`` and the step:
    a process starts with a random seed, and the checkpoint was loaded without building (and seeding)
    a model, so without this two identical runs fine-tuned differently."""
    loop = dataclasses.replace(LoopConfig.from_config(cfg), epochs=cfg.finetune_epochs)
    if step == 1:  # the resolved loop (inherited from the checkpoint's training unless given), once
        progress.log(f"fine-tuning: {loop.epochs} epoch{'s' if loop.epochs != 1 else ''} per step, {loop_text(loop)}"
                     + (f", word dropout {loop.token_dropout:g}" if loop.token_dropout else "")
                     + (", KD from the unpruned model" if teacher is not None else ""))
    torch.manual_seed(cfg.seed * 1_000 + step)
    loss_fn = prune_loss_fn(cfg, teacher, kept, loop) if teacher is not None else None
    fitted = fit(model, data, loop, device, loss_fn=loss_fn, progress=progress, desc=f"fine-tune (step {step})")
    return {"finetune_best_epoch": fitted.best_epoch, "finetune_seconds": fitted.seconds,
            "finetune_history": fitted.history}


def _acc_fields(stage: str, acc: Accuracy | None) -> dict[str, float]:
    """``val_acc_<stage>`` / ``test_acc_<stage>`` of a step's record (none without data)."""
    return {} if acc is None else {f"val_acc_{stage}": acc.val_acc, f"test_acc_{stage}": acc.test_acc}


def _row_accuracy(row: dict[str, Any], stage: str) -> Accuracy | None:
    """The :class:`Accuracy` a step recorded for ``stage`` (None: not measured)."""
    return Accuracy(row[f"val_acc_{stage}"], row[f"test_acc_{stage}"]) if f"val_acc_{stage}" in row else None


def _step(cfg: PruneConfig, model: MHSAClassifier, original: MHSAClassifier, data: TaskData | None,
          device: torch.device, progress: Progress, step: int, origin: Origin,
          teacher: KDTeacher | None = None, removal: Any = prune_step) -> tuple[MHSAClassifier, dict]:
    """One step: blocks, heads, neurons removed (``removal``: :func:`.plan.prune_step`, or with a
    budget :func:`.budget.budget_step`), fine-tune (if asked; with ``teacher``: KD)."""
    model, row = removal(cfg, model, data, step, origin, original, progress)
    row.update(_acc_fields("pruned", _accuracy(model, data, device)))
    if cfg.finetune_epochs:  # data is there: prune_data refused fine-tuning without it
        row.update(_finetune(cfg, model, data, device, progress, step, teacher, origin.layers))
        row.update(_acc_fields("finetuned", _accuracy(model, data, device)))
    return model, row


def _union(steps: list[dict[str, Any]], key: str, n_layers: int) -> list[list[int]]:
    """Original indices removed over all steps, per original layer."""
    return [sorted(i for s in steps for i in s[key][l]) for l in range(n_layers)]


def _scored_on(needs_data: bool) -> str:
    return "validation split" if needs_data else "no data"


def _prune_steps(cfg: PruneConfig, ckpt: Checkpoint, model: MHSAClassifier, data: TaskData | None,
                 device: torch.device, progress: Progress, why: str | None,
                 source: tuple[Checkpoint | None, dict[int, int]]) -> PruneResult:
    """Prune in ``cfg.iterative`` steps (re-scoring the smaller model each time); then save.
    ``source``: :func:`.kd.teacher_source`'s teacher checkpoint and block pairs (KD fine-tuning)."""
    original, origin, steps = model, Origin.of(model), []
    teacher = kd_teacher(original, *source) if kd_enabled(cfg) else None
    search = choose_fraction(cfg, model, data, progress) if cfg.budget else None
    removal = functools.partial(budget_step, fraction=search.fraction) if search else prune_step
    for step in range(1, cfg.iterative + 1):
        model, row = _step(cfg, model, original, data, device, progress, step, origin, teacher, removal)
        steps.append(row)
        progress.log(f"step {step}/{cfg.iterative}: layers {row['layers']}, heads {model.heads}, "
                     f"d_ff {model.ff_sizes}")
    last, L = steps[-1], len(original.blocks)
    result = PruneResult(
        cfg.out, cfg.method[0], cfg.scope, steps[0]["scores"], _union(steps, "removed", L),
        original.heads, model.heads, count_parameters(original), count_parameters(model),
        attention_flops(original.config, cfg.budget_seq_len), attention_flops(model.config, cfg.budget_seq_len),
        _accuracy(original, data, device),
        _row_accuracy(last, "pruned"), _row_accuracy(last, "finetuned"),
        steps, task=data.summary() if data is not None else {"name": ckpt.task_spec.get("name")},
        test_classes=split_report(model, data.test, data.labels, device).to_dict() if data is not None else None,
        d_ff_before=original.ff_sizes, d_ff_after=model.ff_sizes,
        neurons_removed=_union(steps, "neurons_removed", L),
        layers_dropped=sorted(i for s in steps for i in s["layers_dropped"]), layers_kept=list(origin.layers),
        layer_scores=next((s["layer_scores"] for s in steps if "layer_scores" in s), None),
        accuracy_not_measured=why, scored_on=_scored_on(cfg.method[0] in NEEDS_DATA),
        layers_scored_on=_scored_on(cfg.layer_method in LAYER_NEEDS_DATA), flops_seq_len=cfg.budget_seq_len,
        kd=kd_plan(cfg, teacher))
    if search is not None:
        result.budget = budget_doc(cfg, search, original, model, progress)
    result.files = _save_pruned(cfg, ckpt, model, result, data.spec if cfg.data else ckpt.task_spec)
    return result


def _save_pruned(cfg: PruneConfig, ckpt: Checkpoint, model: MHSAClassifier, r: PruneResult,
                 spec: dict[str, Any]) -> list[str]:
    """Write the checkpoint (task ``spec``: ``--data``'s, else the input's; + head_importance.json,
    pruning.json, + .png with matplotlib) in one rename."""
    from ..report.prune import heatmap_png

    meta = make_meta("float", model.config, spec, "prune", to_dict(cfg), metrics_doc(r),
                     parent=ckpt, extra={"steps": light_steps(r.steps)})
    extra: dict[str, Any] = {"head_importance.json": importance_doc(cfg, r), "pruning.json": pruning_doc(cfg, r)}
    png = heatmap_png(r.scores, r.removed, f"head importance ({r.method}, {r.scored_on})")
    if png is not None:
        extra["head_importance.png"] = png
    out = save_model(cfg.out, model.cpu(), meta, force=cfg.force, extra_files=extra)
    return [str(out / name) for name in ("model.safetensors", "checkpoint.json", *extra)]


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
    from ..report import csv_text
    from ..report.prune import sweep_csv_rows, sweep_png

    doc = {"checkpoint": str(ckpt.path), "checkpoint_id": ckpt.meta.get("id"), "split": "test",
           "finetuned": False, "settings": to_dict(cfg), "baseline": dataclasses.asdict(r.baseline),
           "scope": r.scope, "ratios": r.ratios, "methods": r.methods, "seeds": r.seeds, "cells": r.cells}
    files: dict[str, Any] = {"sweep.json": doc, "sweep.csv": csv_text(*sweep_csv_rows(r))}
    png = sweep_png(r)
    if png is not None:
        files["sweep.png"] = png
    out = atomic_dir(Path(cfg.out), cfg.force, lambda tmp: write_files(tmp, files), inputs=[cfg.checkpoint])
    return [str(out / name) for name in files]
