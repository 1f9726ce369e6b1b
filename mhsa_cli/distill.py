"""Knowledge distillation: student construction and distillation losses.

``mhsa distill`` trains a smaller student on the teacher's own task (rebuilt
from the teacher checkpoint) with the one training loop, :func:`mhsa_cli.train.fit`,
and a loss made of up to three weighted terms:

* logits (Hinton et al.): ``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(p_t^T || p_s^T)``
  with ``p^T = softmax(logits / T)``. The ``T^2`` factor keeps the soft-target
  gradients on the same scale as the hard-label ones when ``T`` changes.
  Defaults: ``alpha = 0.5``, ``T = 2``.
* hidden states: MSE between paired student and teacher layers (``s:t``,
  1-based blocks, 0 = embeddings; default last:last), over real (non-padding)
  tokens, through a learned ``nn.Linear`` map when the widths differ. The maps
  are trained with the student but **not saved** in the student checkpoint.
* attention (MiniLM-style): KL(teacher || student) between the *head-averaged*
  attention maps of the same layer pairs (so head counts may differ), over real
  query rows. Pairs involving the embeddings (0) or a layer with zero heads
  (pruned) are skipped with a note; if none remain it is an error.

Each term is averaged over its layer pairs and then multiplied by its weight.

The teacher is put in eval mode, its parameters get ``requires_grad=False`` and
its forward runs under ``torch.no_grad()``, so no teacher graph is kept. A
pruned (float) teacher works; an int8 teacher is refused (int8 models only run
inference on CPU). A student with more parameters than its teacher is refused.

Student shape: ``--shrink half`` halves the layers (min 1), ``d_model``, heads
(``head_dim`` kept) and ``d_ff``; ``quarter`` halves the layers and quarters
the width. ``--layers/--d-model/--heads/--d-ff`` override the preset; with
neither, ``half`` is used (with ``--init-from-teacher``: half the layers at the
teacher's width, as DistilBERT). ``--init-from-teacher`` copies embeddings,
classifier and student block ``i`` <- teacher block ``floor(i * L_t / L_s)``
(1-based, e.g. 2 from 4 -> blocks 2 and 4); it needs equal ``d_model`` and ``d_ff``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as dist
from .checkpoint import Checkpoint, check_output_dir, load_checkpoint, load_model, make_meta, save_model
from .config import DistillConfig, to_dict
from .environment import resolve_device, set_threads
from .errors import MhsaError
from .model import MHSAClassifier, ModelConfig, build_model, count_parameters, make_config
from .progress import NULL, Progress
from .tasks import TaskData, task_from_spec
from .train import FitResult, LossFn, LoopConfig, cross_entropy_loss, evaluate, fit

SHRINK = {"half": (0.5, 0.5), "quarter": (0.5, 0.25)}  # preset -> (layer factor, width factor)
DEPTH_ONLY = (0.5, 1.0)  # default with --init-from-teacher (DistilBERT: half the layers, same width)
INT8_HINT = "use the float teacher (int8 models run only for inference on CPU)"


@dataclass
class LossWeights:
    """Weights of the distillation terms (see the module docstring)."""

    alpha: float = 0.5
    temperature: float = 2.0
    hidden: float = 0.0
    attention: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"ce": 1.0 - self.alpha, "kd": self.alpha, "temperature": self.temperature,
                "hidden_mse": self.hidden, "attention_kl": self.attention}


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


# ---------------------------------------------------------------- losses

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            alpha: float, temperature: float) -> torch.Tensor:
    """``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``.

    Args:
        student_logits, teacher_logits: (B, C).
        labels: (B,) class ids.
        alpha: weight of the soft-target term, in [0, 1].
        temperature: T > 0.

    Returns:
        Scalar loss; the KL is summed over classes and averaged over the batch.
    """
    ce = F.cross_entropy(student_logits, labels)
    log_s = F.log_softmax(student_logits / temperature, dim=-1)  # (B, C)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
    return (1.0 - alpha) * ce + alpha * temperature ** 2 * kl


def _token_weights(pad_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(B, T) float weights: 1 for real tokens, 0 for padding (all 1 without a mask)."""
    if pad_mask is None:
        return like.new_ones(like.shape[:2])
    return pad_mask.to(like.dtype)


def hidden_mse(student_h: torch.Tensor, teacher_h: torch.Tensor, pad_mask: torch.Tensor | None,
               proj: nn.Module | None = None) -> torch.Tensor:
    """Mean squared error over real tokens between (mapped) student and teacher states.

    Args:
        student_h: (B, T, Ds); teacher_h: (B, T, Dt); pad_mask: (B, T) True = real or None.
        proj: maps Ds -> Dt when the widths differ.

    Returns:
        Scalar: squared error averaged over real tokens and teacher features.
    """
    s = proj(student_h) if proj is not None else student_h  # (B, T, Dt)
    w = _token_weights(pad_mask, s)  # (B, T)
    err = (s - teacher_h).pow(2).mean(-1)  # (B, T)
    return (err * w).sum() / w.sum().clamp(min=1.0)


def attention_kl(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                 pad_mask: torch.Tensor | None, eps: float = 1e-12) -> torch.Tensor:
    """KL(teacher || student) of head-averaged attention maps, over real query rows.

    Args:
        student_attn: (B, Hs, T, T); teacher_attn: (B, Ht, T, T) (rows sum to 1,
            padded keys are 0); pad_mask: (B, T) True = real token, or None.

    Returns:
        Scalar: KL summed over keys, averaged over real query rows.
    """
    s = student_attn.mean(1)  # (B, T, T)
    t = teacher_attn.mean(1)
    kl = (torch.xlogy(t, t) - t * s.clamp(min=eps).log()).sum(-1)  # (B, T); 0 * log 0 = 0
    w = _token_weights(pad_mask, kl)
    return (kl * w).sum() / w.sum().clamp(min=1.0)


def make_loss_fn(teacher: nn.Module, weights: LossWeights, hidden_pairs: list[tuple[int, int]],
                 attn_pairs: list[tuple[int, int]], projections: nn.ModuleList | None = None) -> LossFn:
    """The distillation loss for :func:`mhsa_cli.train.fit`: ``(model, x, y) -> (loss, logits)``.

    The teacher runs under ``no_grad``; hidden states and attentions are only
    computed when their weight is positive.

    Args:
        teacher: eval-mode model with frozen parameters.
        weights: loss weights.
        hidden_pairs, attn_pairs: layer pairs (student, teacher).
        projections: one module per hidden pair (``nn.Identity`` when widths match).
    """
    use_hidden = weights.hidden > 0 and bool(hidden_pairs)
    use_attn = weights.attention > 0 and bool(attn_pairs)
    features = use_hidden or use_attn

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        with torch.no_grad():
            t = teacher(x, features=features, output_attentions=use_attn)
        s = model(x, features=features, output_attentions=use_attn)
        s_logits, t_logits = (s.logits, t.logits) if features else (s, t)
        loss = kd_loss(s_logits, t_logits, y, weights.alpha, weights.temperature)
        if use_hidden:
            terms = [hidden_mse(s.hidden_states[i], t.hidden_states[j], s.pad_mask, projections[k])
                     for k, (i, j) in enumerate(hidden_pairs)]
            loss = loss + weights.hidden * torch.stack(terms).mean()
        if use_attn:
            terms = [attention_kl(s.attentions[i - 1], t.attentions[j - 1], s.pad_mask)
                     for i, j in attn_pairs]
            loss = loss + weights.attention * torch.stack(terms).mean()
        return loss, s_logits

    return loss_fn


def make_projections(student: ModelConfig, teacher: ModelConfig, n_pairs: int,
                     seed: int = 0) -> nn.ModuleList:
    """One learned ``Linear(Ds, Dt)`` per hidden pair when widths differ, else identities."""
    torch.manual_seed(seed + 1)  # after the student's own seeded init: both stay reproducible
    same = student.d_model == teacher.d_model
    return nn.ModuleList(nn.Identity() if same else nn.Linear(student.d_model, teacher.d_model)
                         for _ in range(n_pairs))


# ---------------------------------------------------------------- student

def student_config(teacher: ModelConfig, cfg: DistillConfig) -> ModelConfig:
    """The student's architecture from ``--shrink`` and/or explicit shape options.

    Raises:
        MhsaError: an unusable shape (e.g. ``d_model`` not divisible by ``heads``).
    """
    explicit = any(v is not None for v in (cfg.layers, cfg.d_model, cfg.heads, cfg.d_ff))
    if cfg.shrink:
        lf, wf = SHRINK[cfg.shrink]
    elif explicit:
        lf, wf = 1.0, 1.0  # unspecified options keep the teacher's value
    else:
        lf, wf = DEPTH_ONLY if cfg.init_from_teacher else SHRINK["half"]
    layers = cfg.layers or max(1, int(teacher.n_layers * lf))
    d_model = cfg.d_model or max(1, int(teacher.d_model * wf))
    heads = cfg.heads or max(1, d_model // teacher.head_dim)  # keep head_dim where possible
    d_ff = cfg.d_ff or max(1, int(teacher.d_ff * wf))
    return make_config(teacher.input_kind, teacher.max_len, teacher.num_classes, teacher.vocab_size,
                       teacher.feature_dim, layers, d_model, heads, d_ff, teacher.dropout, teacher.pooling)


def layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher block (1-based) for each student block: every k-th, ending at the last.

    >>> layer_map(2, 4), layer_map(3, 12), layer_map(1, 2)
    ([2, 4], [4, 8, 12], [2])
    """
    return [max(1, (i * n_teacher) // n_student) for i in range(1, n_student + 1)]


def match_teacher_blocks(student: ModelConfig, teacher: ModelConfig, explicit_heads: int | None
                         ) -> tuple[ModelConfig, list[int]]:
    """For ``--init-from-teacher``: give the student the copied blocks' head counts.

    Returns:
        The student config (per-layer heads and ``head_dim`` of the teacher's
        mapped blocks) and the layer map.

    Raises:
        MhsaError: widths differ, or ``--heads`` disagrees with the teacher's blocks.
    """
    if (student.d_model, student.d_ff) != (teacher.d_model, teacher.d_ff):
        raise MhsaError(f"--init-from-teacher needs the teacher's widths (d_model {teacher.d_model}, "
                        f"d_ff {teacher.d_ff}); the student has d_model {student.d_model}, d_ff {student.d_ff}")
    mapping = layer_map(student.n_layers, teacher.n_layers)
    heads = [teacher.heads[j - 1] for j in mapping]
    if explicit_heads is not None and any(h != explicit_heads for h in heads):
        raise MhsaError(f"--init-from-teacher copies teacher blocks {mapping} with heads {heads}; "
                        f"--heads {explicit_heads} disagrees (drop --heads)")
    return dataclasses.replace(student, heads=heads, head_dim=teacher.head_dim).validate(), mapping


def init_from_teacher(student: MHSAClassifier, teacher: MHSAClassifier, mapping: list[int]) -> None:
    """Copy embeddings, final norm, classifier and block ``i`` <- teacher block ``mapping[i]``.

    Args:
        mapping: 1-based teacher block per student block (see :func:`layer_map`).
    """
    src = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            key_t = f"blocks.{mapping[int(i)] - 1}.{rest}"
        else:
            key_t = key
        state[key] = src[key_t].detach().clone()
    student.load_state_dict(state, strict=True)


def parse_pairs(specs: list[str] | None, n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """``["1:2", "0:0"]`` -> ``[(1, 2), (0, 0)]``; default last student : last teacher block.

    Raises:
        MhsaError: a malformed pair or an index out of range (0 = embeddings).
    """
    if not specs:
        return [(n_student, n_teacher)]
    pairs = []
    for spec in specs:
        try:
            s, t = (int(v) for v in str(spec).split(":"))
        except ValueError:
            raise MhsaError(f"--hidden-layers: expected student:teacher pairs like 1:2, got '{spec}'") from None
        for who, i, n in (("student", s, n_student), ("teacher", t, n_teacher)):
            if not 0 <= i <= n:
                raise MhsaError(f"--hidden-layers: {who} layer {i} out of range 0..{n} (0 = embeddings) in '{spec}'")
        pairs.append((s, t))
    return pairs


def attention_pairs(pairs: list[tuple[int, int]], s_heads: list[int], t_heads: list[int],
                    notes: list[str]) -> list[tuple[int, int]]:
    """The hidden pairs usable for the attention loss: blocks with heads on both sides.

    Skipped pairs are explained in ``notes``.

    Raises:
        MhsaError: no pair is usable.
    """
    usable = []
    for s, t in pairs:
        if s == 0 or t == 0:
            notes.append(f"attention loss skips pair {s}:{t} (embeddings have no attention)")
        elif s_heads[s - 1] == 0 or t_heads[t - 1] == 0:
            notes.append(f"attention loss skips pair {s}:{t} (a layer with 0 heads)")
        else:
            usable.append((s, t))
    if not usable:
        raise MhsaError(f"--attn-weight: no --hidden-layers pair has attention heads on both sides "
                        f"(student heads {s_heads}, teacher heads {t_heads})")
    return usable


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
    if ckpt.kind != "float":
        raise MhsaError(f"cannot distill from {ckpt.path}: it is an {ckpt.kind} checkpoint; {INT8_HINT}")
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
    loss_fn = make_loss_fn(teacher, weights, plan.hidden_pairs, plan.attn_pairs, projections)
    return fit(student, data, loop, device, loss_fn=loss_fn, progress=progress, desc="distill",
               extra_params=list(projections.parameters()))


def _scores(model: nn.Module, data: TaskData, device: torch.device, teacher_test: float) -> dict[str, Any]:
    test = evaluate(model, data.test, device)
    return {"params": count_parameters(model), "val_acc": evaluate(model, data.val, device),
            "test_acc": test, "relative_test_acc": test / teacher_test if teacher_test else None}


def _scratch(cfg: DistillConfig, plan: DistillPlan, data: TaskData, loop: LoopConfig,
             device: torch.device, progress: Progress) -> tuple[nn.Module, FitResult]:
    """The same student (same seed), trained with plain cross-entropy and the same budget."""
    model = build_model(plan.student, seed=cfg.seed)
    fitted = fit(model, data, loop, device, loss_fn=cross_entropy_loss(), progress=progress, desc="scratch")
    return model, fitted


def _metrics(student: dict[str, Any], teacher: dict[str, Any], fitted: FitResult,
             scratch: dict[str, Any] | None) -> dict[str, Any]:
    m = {**student, "param_ratio": student["params"] / teacher["params"],
         "teacher_params": teacher["params"], "teacher_val_acc": teacher["val_acc"],
         "teacher_test_acc": teacher["test_acc"], "best_epoch": fitted.best_epoch,
         "epochs_run": len(fitted.history), "train_seconds": fitted.seconds, "world_size": dist.world_size()}
    if scratch:
        m.update({f"scratch_{k}": v for k, v in scratch.items() if k != "params"})
    return m


def _plan_dict(plan: DistillPlan) -> dict[str, Any]:
    s = plan.student
    return {"student": {"layers": s.n_layers, "d_model": s.d_model, "heads": list(s.heads),
                        "head_dim": s.head_dim, "d_ff": s.d_ff},
            "hidden_pairs": [list(p) for p in plan.hidden_pairs],
            "attention_pairs": [list(p) for p in plan.attn_pairs],
            "init_layer_map": plan.layer_map, "projections_saved": False}


def _prepare(cfg: DistillConfig) -> tuple[Checkpoint, MHSAClassifier, DistillPlan, TaskData, torch.device]:
    """Every check and load before training: nothing is trained or written if one fails.

    Under torchrun it runs on every rank inside :func:`mhsa_cli.distributed.agree`.
    """
    set_threads(cfg.threads)
    device = dist.local_device(resolve_device(cfg.device))
    dist.local_batch_size(cfg.batch_size)
    if cfg.teacher and Path(cfg.out).resolve() == Path(cfg.teacher).resolve():
        raise MhsaError("--out must differ from --teacher (the teacher would be overwritten)")
    if dist.is_main():
        check_output_dir(cfg.out, cfg.force)
    ckpt, teacher = load_teacher(cfg.teacher)
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
        model, scratch_fit = _scratch(cfg, plan, data, loop, device, progress)
        scratch = {**_scores(model, data, device, t_test), "train_seconds": scratch_fit.seconds}
    metrics = _metrics(_scores(student, data, device, t_test), t_info, fitted, scratch)
    plan_info, scratch_history = _plan_dict(plan), scratch_fit.history if scratch_fit else None
    meta = make_meta("float", plan.student, ckpt.task_spec, "distill",
                     {**to_dict(cfg), "losses": weights.to_dict(), **plan_info}, metrics, parent=ckpt,
                     extra={"history": fitted.history, "scratch_history": scratch_history, "notes": plan.notes})
    # rank 0 writes; agreeing on the outcome doubles as the barrier (as in train)
    dist.agree(lambda: save_model(cfg.out, student.cpu(), meta, force=cfg.force) if dist.is_main() else None)
    return DistillResult(cfg.out, metrics, t_info, weights.to_dict(), plan_info, fitted.history,
                         scratch_history, data.summary(), plan.notes)
