"""``mhsa distill``: load the teacher, plan the student, train it, save it.

:func:`make_plan` resolves the student and the layer pairs (every bad input is
raised there, as :class:`DistillPlan`); :func:`load_teacher` loads the teacher;
:func:`train_student` trains with :func:`mhsa_cli.train.fit` and the loss from
:mod:`.losses`; :func:`distill` (``mhsa distill``) does it all on the teacher's
own task (rebuilt from the teacher checkpoint), optionally with a scratch
student for comparison, saves the student and returns a :class:`DistillResult`.

The teacher is put in eval mode, its parameters get ``requires_grad=False`` and
its forward runs under ``torch.no_grad()``, so no teacher graph is kept. A
pruned (float) teacher works; an int8 teacher is refused (int8 models only run
inference on CPU). A student with more parameters than its teacher is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import distributed as dist
from ..checkpoint import (Checkpoint, check_output_dir, finetune_loop, load_checkpoint, load_model, make_meta,
                          save_model)
from ..config import DistillConfig, resolve_loop, to_dict
from ..environment import resolve_device, set_threads
from ..errors import MhsaError
from ..model import MHSAClassifier, ModelConfig, build_model, count_parameters
from ..progress import NULL, Progress
from ..tasks import TaskData, task_from_spec
from ..train import FitResult, LoopConfig, check_mixup, evaluate, fit, make_mixup, split_report
from .losses import LossWeights, make_loss_fn, make_projections
from .student import attention_pairs, init_from_teacher, match_teacher_blocks, parse_pairs, student_config

INT8_HINT = "use the float teacher (int8 models run only for inference on CPU)"


@dataclass
class DistillPlan:
    """Everything resolved before training (all bad input is caught here)."""

    student: ModelConfig
    hidden_pairs: list[tuple[int, int]]  # (student, teacher); 0 = embeddings, 1.. = blocks
    attn_pairs: list[tuple[int, int]]  # (student, teacher) blocks, 1-based
    layer_map: list[int] | None  # teacher block (1-based) copied into each student block
    notes: list[str] = field(default_factory=list)


@dataclass
class DistillResult:
    """What :func:`distill` returns (the CLI renders it)."""

    out: str
    metrics: dict[str, Any]
    teacher: dict[str, Any]  # path, params, val_acc, test_acc
    losses: dict[str, float]
    plan: dict[str, Any]  # student shape, layer pairs, init map
    history: list[dict[str, float]]
    scratch_history: list[dict[str, float]] | None
    task: dict[str, Any]
    notes: list[str]


def make_plan(cfg: DistillConfig, teacher: ModelConfig, teacher_params: int) -> DistillPlan:
    """Resolve the student and the layer pairs; every bad input is raised here.

    Raises:
        MhsaError: bad shape, layer pairs, init request, or a student larger than the teacher.
    """
    student, mapping = student_config(teacher, cfg), None
    if cfg.init_from_teacher:
        student, mapping = match_teacher_blocks(student, teacher, cfg.heads)
    n_student = count_parameters(build_model(student))
    if n_student > teacher_params:
        raise MhsaError(f"student has {n_student:,} parameters, more than the teacher's {teacher_params:,}; "
                        "distillation compresses: choose a smaller --shrink/--layers/--d-model/--d-ff")
    if cfg.hidden_layers and not (cfg.hidden_weight > 0 or cfg.attn_weight > 0):
        raise MhsaError("--hidden-layers has no effect without --hidden-weight or --attn-weight > 0")
    pairs = parse_pairs(cfg.hidden_layers, student.n_layers, teacher.n_layers)
    notes: list[str] = []
    attn = attention_pairs(pairs, student.heads, teacher.heads, notes) if cfg.attn_weight > 0 else []
    if cfg.hidden_weight > 0 and student.d_model != teacher.d_model:
        notes.append(f"hidden loss maps student width {student.d_model} -> {teacher.d_model} with learned "
                     "linear maps; they are not saved in the student checkpoint")
    if cfg.init_from_teacher and cfg.compare_scratch:
        notes.append("the scratch student starts from random weights (same seed), not from the teacher's blocks")
    return DistillPlan(student, pairs if cfg.hidden_weight > 0 else [], attn, mapping, notes)


# ---------------------------------------------------------------- training

def load_teacher(path: str) -> tuple[Checkpoint, MHSAClassifier]:
    """Load a float teacher, frozen: eval mode and ``requires_grad=False``.

    Raises:
        MhsaError: missing or corrupt checkpoint, or an int8 one.
    """
    if not path:
        raise MhsaError("--teacher is required (a float checkpoint folder, e.g. runs/baseline)")
    ckpt = load_checkpoint(path)
    ckpt.require_kind("float", "distill from", INT8_HINT)
    teacher = load_model(ckpt)
    teacher.eval().requires_grad_(False)
    return ckpt, teacher


def train_student(student: MHSAClassifier, teacher: MHSAClassifier, data: TaskData, loop: LoopConfig,
                  weights: LossWeights, plan: DistillPlan, device: torch.device | str = "cpu",
                  progress: Progress = NULL) -> FitResult:
    """Distil ``teacher`` into ``student`` with :func:`mhsa_cli.train.fit`.

    Returns:
        The fit result; ``student`` holds its best-validation weights. The
        teacher is left in eval mode with no gradients.
    """
    teacher.eval().requires_grad_(False).to(device)
    projections = make_projections(student.config, teacher.config, len(plan.hidden_pairs), loop.seed).to(device)
    loss_fn = make_loss_fn(teacher, weights, plan.hidden_pairs, plan.attn_pairs, projections, make_mixup(loop))
    return fit(student, data, loop, device, loss_fn=loss_fn, progress=progress, desc="distill",
               extra_params=list(projections.parameters()))


def _scores(model: nn.Module, fitted: FitResult, data: TaskData, device: torch.device,
            teacher_test: float) -> dict[str, Any]:
    """Metrics of a fitted student; its validation accuracy is the one fit kept (its final weights)."""
    test = evaluate(model, data.test, device)
    report = split_report(model, data.test, data.labels, device)
    return {"params": count_parameters(model), "val_acc": fitted.best_val_acc,
            "test_acc": test, "relative_test_acc": test / teacher_test if teacher_test else None,
            "test_macro_f1": report.macro_f1, "test_classes": report.to_dict()}


def _scratch(plan: DistillPlan, data: TaskData, loop: LoopConfig, device: torch.device,
             progress: Progress) -> tuple[nn.Module, FitResult]:
    """The same student (same seed), trained with fit's own cross-entropy (and the same mixes) and budget."""
    model = build_model(plan.student, seed=loop.seed)
    return model, fit(model, data, loop, device, progress=progress, desc="scratch")


def _metrics(student: dict[str, Any], teacher: dict[str, Any], fitted: FitResult,
             scratch: dict[str, Any] | None) -> dict[str, Any]:
    m = {**student, "param_ratio": student["params"] / teacher["params"],
         "teacher_params": teacher["params"], "teacher_val_acc": teacher["val_acc"],
         "teacher_test_acc": teacher["test_acc"], "best_epoch": fitted.best_epoch,
         "epochs_run": len(fitted.history), "train_seconds": fitted.seconds, "world_size": dist.world_size()}
    if scratch:
        m.update({f"scratch_{k}": v for k, v in scratch.items() if k not in ("params", "test_classes")})
    return m


def _plan_dict(plan: DistillPlan) -> dict[str, Any]:
    s = plan.student
    return {"student": {"layers": s.n_layers, "d_model": s.d_model, "heads": list(s.heads),
                        "head_dim": s.head_dim, "d_ff": s.d_ff},
            "hidden_pairs": [list(p) for p in plan.hidden_pairs],
            "attention_pairs": [list(p) for p in plan.attn_pairs],
            "init_layer_map": plan.layer_map, "projections_saved": False}


def teacher_epochs(ckpt: Checkpoint, default: int = 12) -> int:
    """Epochs the teacher's first training stage used (the student's default budget)."""
    for step in ckpt.meta.get("lineage", []):
        epochs = step.get("settings", {}).get("epochs")
        if step.get("operation") in ("train", "distill") and isinstance(epochs, int):
            return epochs
    return default


def _prepare(cfg: DistillConfig) -> tuple[Checkpoint, MHSAClassifier, DistillPlan, TaskData, torch.device]:
    """Every check and load before training: nothing is trained or written if one fails.

    Under torchrun it runs on every rank inside :func:`mhsa_cli.distributed.agree`.
    """
    set_threads(cfg.threads)
    device = dist.local_device(resolve_device(cfg.device))
    dist.local_batch_size(cfg.batch_size)
    if dist.is_main():
        check_output_dir(cfg.out, cfg.force, inputs=[cfg.teacher])
    ckpt, teacher = load_teacher(cfg.teacher)
    resolve_loop(cfg, finetune_loop(ckpt.meta), lr=3e-3)
    check_mixup(cfg.mixup, ckpt.model_config.input_kind, ckpt.task_spec.get("name", "?"))
    if cfg.epochs is None:  # resolved here so the student records the real number
        cfg.epochs = teacher_epochs(ckpt)
    plan = make_plan(cfg, ckpt.model_config, count_parameters(teacher))
    return ckpt, teacher, plan, task_from_spec(ckpt.task_spec), device


def distill(cfg: DistillConfig, progress: Progress = NULL) -> DistillResult:
    """Train a student from ``cfg.teacher`` on its task and save it to ``cfg.out``.

    Example::

        from mhsa_cli.config import DistillConfig, build_config
        result = distill(build_config(DistillConfig, {"teacher": "runs/baseline", "out": "runs/student"}))
        print(result.metrics["test_acc"], result.metrics["relative_test_acc"])

    Returns:
        DistillResult: metrics of teacher, student (and scratch student), loss
        weights, the resolved plan and the training histories.

    Raises:
        MhsaError: missing/corrupt/int8 teacher, unusable student shape or layer
            pairs, a student larger than the teacher, or an existing output folder.
            All are raised before anything is trained or written.
    """
    ckpt, teacher, plan, data, device = dist.agree(_prepare, cfg)
    weights = LossWeights(cfg.alpha, cfg.temperature, cfg.hidden_weight, cfg.attn_weight)
    losses = {**weights.to_dict(), "mixup": cfg.mixup}
    loop = LoopConfig.from_config(cfg)
    t_test = evaluate(teacher.to(device), data.test, device)
    t_info = {"path": str(ckpt.path), "params": count_parameters(teacher),
              "val_acc": evaluate(teacher, data.val, device), "test_acc": t_test}
    for note in plan.notes:
        progress.log(f"note: {note}")
    student = build_model(plan.student, seed=cfg.seed)
    if plan.layer_map:
        init_from_teacher(student, teacher, plan.layer_map)
    fitted = train_student(student, teacher, data, loop, weights, plan, device, progress)
    scratch, scratch_fit = None, None
    if cfg.compare_scratch:
        model, scratch_fit = _scratch(plan, data, loop, device, progress)
        scratch = {**_scores(model, scratch_fit, data, device, t_test), "train_seconds": scratch_fit.seconds}
    metrics = _metrics(_scores(student, fitted, data, device, t_test), t_info, fitted, scratch)
    plan_info, scratch_history = _plan_dict(plan), scratch_fit.history if scratch_fit else None
    meta = make_meta("float", plan.student, ckpt.task_spec, "distill",
                     {**to_dict(cfg), "losses": losses, **plan_info}, metrics, parent=ckpt,
                     extra={"history": fitted.history, "scratch_history": scratch_history, "notes": plan.notes})
    # rank 0 writes; agreeing on the outcome doubles as the barrier (as in train)
    dist.agree(lambda: save_model(cfg.out, student.cpu(), meta, force=cfg.force) if dist.is_main() else None)
    return DistillResult(cfg.out, metrics, t_info, losses, plan_info, fitted.history,
                         scratch_history, data.summary(), plan.notes)
