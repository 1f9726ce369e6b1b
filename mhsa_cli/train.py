"""The one training loop.

:func:`fit` trains any model on a task's train split, selects the best epoch on
the validation split, and is reused by fine-tuning after pruning and by
distillation (which passes its own loss). :func:`train` is ``mhsa train``.
The test split is only evaluated once, at the end, for reporting. Batching and
evaluation live in :mod:`mhsa_cli.batching`, the regularisers and the loss in
:mod:`mhsa_cli.regularize` (their names are importable from here too).

Under torchrun (see :mod:`mhsa_cli.distributed`) the same code trains with
DistributedDataParallel: ``batch_size`` is the global batch, split evenly over
the processes; metrics are summed over processes so every rank agrees; rank 0
alone writes the checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from . import distributed as dist
from .checkpoint import check_output_dir, make_meta, save_model
from .config import TrainConfig, to_dict
from .environment import resolve_device, set_threads
from .errors import MhsaError
from .model import build_model, count_parameters, make_config
from .progress import NULL, Progress
from .tasks import Split, TaskData, load_task
# re-exported: fine-tuning, distillation and the tests import these from here
from .batching import (BUCKET_CHUNK, shuffle_seed, batch_index, batches, evaluate,  # noqa: F401
                       predict_logits, split_report)
from .regularize import (UNK_ID, LossFn, Mixup, TokenDropout, check_mixup,  # noqa: F401
                         cross_entropy_loss, make_mixup, make_token_dropout, mixed)



@dataclass
class LoopConfig:
    """Settings of :func:`fit` (a subset of :class:`TrainConfig`, shared by all stages)."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    warmup: float = 0.05
    schedule: str = "cosine"  # after warm-up: cosine or linear decay to zero (SCHEDULES)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    patience: int = 0
    amp: bool = False
    mixup: float = 0.0
    token_dropout: float = 0.0
    bucket: bool = True
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> "LoopConfig":
        """Take the loop fields present on any stage config (missing ones keep defaults)."""
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__ if hasattr(cfg, k)})


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0
    best_val_acc: float = 0.0
    seconds: float = 0.0


# decay after warm-up, t in [0, 1] -> lr factor (linear: BERT's fine-tuning schedule)
SCHEDULES: dict[str, Callable[[float], float]] = {
    "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
    "linear": lambda t: 1.0 - t,
}


def lr_lambda(total_steps: int, warmup: float, schedule: str = "cosine") -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` x steps, then ``schedule``'s decay to zero."""
    warm = max(1, int(total_steps * warmup)) if warmup > 0 else 0
    decay = SCHEDULES[schedule]

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total_steps - warm)
        return decay(min(t, 1.0))

    return f


def fit(model: nn.Module, data: TaskData, loop: LoopConfig, device: torch.device | str = "cpu",
        loss_fn: LossFn | None = None, progress: Progress = NULL, desc: str = "train",
        extra_params: list[nn.Parameter] | None = None) -> FitResult:
    """Train ``model`` on ``data.train``; keep the weights of the best validation epoch.

    Args:
        model: any classifier mapping x -> logits (moved to ``device``).
        data: the task; only ``train`` and ``val`` are used.
        loop: epochs, batch size (global under torchrun), optimiser and schedule settings.
        loss_fn: ``(model, x, y) -> (loss, logits)``; default cross-entropy
            (with ``loop.mixup``: on mixed inputs, :class:`Mixup`; with
            ``loop.token_dropout``: some words as ``<unk>``, :class:`TokenDropout`). Under
            torchrun ``model`` is the DDP wrapper, which forwards keyword arguments
            (``model(x, features=True, output_attentions=True)`` works); the set of
            parameters that get a gradient must be the same every step
            (see :func:`mhsa_cli.distributed.wrap`).
        progress: receives one bar per epoch and a log line per epoch.
        extra_params: more trainable tensors (e.g. distillation projections); under
            torchrun their gradients are averaged over processes like the model's.

    Returns:
        FitResult with the per-epoch history (summed over processes under torchrun);
        ``model`` (never the DDP wrapper) holds the best weights.

    Raises:
        UniformError: under torchrun, ``loop.batch_size`` not divisible by the process count.
    """
    device = dist.local_device(torch.device(device))
    local_batch = dist.local_batch_size(loop.batch_size)
    model.to(device)
    train_model = dist.wrap(model, device)
    dist.decorrelate_rng(loop.seed)
    loss_fn = loss_fn or cross_entropy_loss(loop.label_smoothing, make_mixup(loop), make_token_dropout(loop))
    extra = list(extra_params or [])
    params = [p for p in model.parameters() if p.requires_grad] + extra
    opt = torch.optim.AdamW(params, lr=loop.lr, weight_decay=loop.weight_decay)
    steps_per_epoch = math.ceil(len(dist.sampler(len(data.train), shuffle_seed(loop.seed), 0)) / local_batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch * loop.epochs, loop.warmup,
                                                                   loop.schedule))
    result, best_state, stale, start = FitResult(best_val_acc=-1.0), None, 0, time.perf_counter()
    chance, noted = chance_level(data.val), False
    for epoch in range(1, loop.epochs + 1):
        t0 = time.perf_counter()
        loss_sum, correct, seen = _epoch(train_model, data.train, loop, device, loss_fn, opt, sched,
                                         progress, f"{desc} epoch {epoch}/{loop.epochs}", epoch,
                                         steps_per_epoch, local_batch, extra)
        loss_sum, correct, seen = dist.all_reduce_sum((loss_sum, correct, seen))
        val_acc = evaluate(model, data.val, device)
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
               "val_acc": val_acc, "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        result.history.append(row)
        progress.log(f"{desc} epoch {epoch:>3}  loss {row['train_loss']:.4f}  train acc {row['train_acc']:.4f}"
                     f"  val acc {val_acc:.4f}  {row['seconds']:.1f}s")
        if not noted and epoch < loop.epochs and at_chance(val_acc, chance, len(data.val)):
            progress.log(plateau_note(str(data.spec.get("name")), chance))  # once per run
            noted = True
        if val_acc > result.best_val_acc:
            result.best_val_acc, result.best_epoch, stale = val_acc, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if loop.patience and stale >= loop.patience:
                progress.log(f"{desc}: early stop after epoch {epoch} (best {result.best_epoch})")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result


# task -> why a plateau at chance in the first epochs is expected there
PLATEAU_NOTES = {
    "order": "normal for the `order` task: the model first has to find the three marker tokens among the "
             "filler; validation accuracy typically jumps within a few epochs",
}


def chance_level(split: Split) -> float:
    """Accuracy of always predicting the split's most common label."""
    counts = torch.bincount(split.y)
    return float(counts.max()) / max(len(split), 1)


def at_chance(acc: float, chance: float, n: int) -> bool:
    """True when ``acc`` is within two standard errors of ``chance`` on ``n`` samples (or below it)."""
    return acc <= chance + 2.0 * math.sqrt(chance * (1.0 - chance) / max(n, 1))


def plateau_note(task: str, chance: float) -> str:
    """The one log line printed when validation accuracy is still at chance level."""
    why = PLATEAU_NOTES.get(task, "it may leave it in a few epochs; if it does not, try a lower --lr or more epochs")
    return f"note: validation accuracy is still at chance level ({chance:.1%}); {why}"


def _epoch(model, split, loop, device, loss_fn, opt, sched, progress, desc, epoch, steps,
           batch_size, extra_params):
    """One pass over this process's share of the training split; returns its
    (loss sum, correct, seen)."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    use_amp = loop.amp and device.type == "cuda"
    with progress.task(desc, total=steps) as bar:
        for x, y in batches(split, batch_size, shuffle=True, seed=loop.seed, epoch=epoch, bucket=loop.bucket):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, logits = loss_fn(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the model's gradients over processes here
            dist.average_gradients(extra_params)
            if loop.grad_clip:
                nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], loop.grad_clip)
            opt.step()
            sched.step()
            n = y.shape[0]
            loss_sum += float(loss.detach()) * n
            correct += int((logits.argmax(-1) == y).sum())
            seen += n
            bar.advance(1, loss=loss_sum / seen)
    return loss_sum, correct, seen


@dataclass
class TrainResult:
    """What :func:`train` returns (the CLI renders it)."""

    out: str
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    task: dict[str, Any]


def train(cfg: TrainConfig, progress: Progress = NULL) -> TrainResult:
    """Train a baseline on ``cfg.task`` and save it as a checkpoint in ``cfg.out``.

    Under torchrun every rank calls this: input is validated on all ranks before
    the first collective (:func:`mhsa_cli.distributed.agree`), rank 0 alone checks
    and writes ``cfg.out``, and all ranks return the same metrics.

    Raises:
        MhsaError: bad task/data/shape, missing CUDA, an output folder that exists,
            or (under torchrun) a batch size not divisible by the process count.
    """
    data, mcfg, model, device, parent = dist.agree(_prepare, cfg)
    progress.log(loop_summary(cfg, data.max_len))
    fitted = fit(model, data, LoopConfig.from_config(cfg), device, progress=progress)
    report = split_report(model, data.test, data.labels, device)
    precision = "bf16 autocast" if cfg.amp and device.type == "cuda" else "float32"
    metrics = {
        "val_acc": fitted.best_val_acc,
        "test_acc": evaluate(model, data.test, device),
        "test_macro_f1": report.macro_f1,
        "test_classes": report.to_dict(),
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history),
        "train_seconds": fitted.seconds,
        "params": count_parameters(model),
        "world_size": dist.world_size(),
        "precision": precision,  # what training ran in (--amp is refused where it would do nothing)
    }
    settings = to_dict(cfg)
    meta = make_meta("float", mcfg, data.spec, "train", settings, metrics, parent=parent,
                     extra={"history": fitted.history})
    # rank 0 writes the plain model (fit never returns the DDP wrapper); agreeing on the
    # outcome doubles as the barrier, and a failed write fails every rank alike
    dist.agree(lambda: save_model(cfg.out, model.cpu(), meta, force=cfg.force) if dist.is_main() else None)
    return TrainResult(cfg.out, metrics, fitted.history, data.summary())


def loop_summary(cfg: TrainConfig, max_len: int) -> str:
    """One line with the resolved loop settings (``--init`` picks its own; printed before training)."""
    what = "fine-tuning" if cfg.init else "training"
    return f"{what}: {cfg.epochs} epochs, {loop_text(cfg)}, input length {max_len} tokens"


def loop_text(loop: Any) -> str:
    """Batch, lr, warm-up, decay and weight decay of a loop (a :class:`LoopConfig` or a stage config)."""
    return (f"batch {loop.batch_size}, lr {loop.lr:g} ({loop.warmup:g} warm-up, {loop.schedule} decay), "
            f"weight decay {loop.weight_decay:g}")


def _input_files(cfg: TrainConfig) -> list[str]:
    """The data files a training run reads (text task): ``--out`` must not hold them."""
    opts = cfg.task_kwargs()
    return [str(opts[k]) for k in ("path", "test_path") if opts.get(k)]


def _prepare(cfg: TrainConfig) -> tuple[TaskData, Any, nn.Module, torch.device, Any]:
    """Everything :func:`train` checks and builds before training (run on every rank);
    the last item is the ``--init`` checkpoint (lineage parent) or None."""
    set_threads(cfg.threads)
    device = dist.local_device(resolve_device(cfg.device))
    dist.local_batch_size(cfg.batch_size)
    if cfg.amp and device.type != "cuda":
        raise MhsaError(f"--amp (bf16 autocast) is for CUDA; on {device.type} it would change nothing: "
                        "drop --amp or use --device cuda")
    if dist.is_main():
        check_output_dir(cfg.out, cfg.force, inputs=_input_files(cfg) + ([cfg.init] if cfg.init else []))
    if cfg.init:
        from .finetune import prepare_init

        data, mcfg, model, parent = prepare_init(cfg)
        return data, mcfg, model, device, parent
    data = load_task(cfg.task, seed=cfg.seed, **cfg.task_kwargs())
    check_mixup(cfg.mixup, data.input_kind, cfg.task)
    mcfg = make_config(data.input_kind, data.max_len, data.num_classes, data.vocab_size,
                       data.feature_dim, cfg.layers, cfg.d_model, cfg.heads, cfg.d_ff,
                       cfg.dropout, cfg.pooling)
    return data, mcfg, build_model(mcfg, seed=cfg.seed), device, None
