"""Fine-tuning after a pruning step with the unpruned input model as teacher.

``--kd-weight alpha`` (with ``--finetune-epochs``) replaces the plain cross-entropy of
each step's fine-tuning by the distillation loss of :mod:`mhsa_cli.distill.losses`:

    (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))
    + kd_hidden_weight * mean over kept blocks of MSE(h_s, h_t)

The teacher ``t`` is the model as loaded, before any removal (not the previous step's
model). Pruning keeps ``d_model``, so hidden states compare directly (no learned map):
kept block ``i`` (1-based, current numbering) is paired with the teacher's block
``origin.layers[i-1] + 1``, its own index in the unpruned model. The teacher is a
frozen copy: eval mode, ``requires_grad=False``, run under ``no_grad`` (no graph kept).
"""

from __future__ import annotations

import copy

from torch import nn

from ..config import PruneConfig
from ..distill.losses import LossWeights, make_loss_fn
from ..model import MHSAClassifier
from ..train import LossFn, LoopConfig, make_mixup


def kd_enabled(cfg: PruneConfig) -> bool:
    """Whether fine-tuning distils from the unpruned model (``--kd-weight`` or ``--kd-hidden-weight`` > 0)."""
    return bool(cfg.finetune_epochs) and (cfg.kd_weight > 0 or cfg.kd_hidden_weight > 0)


def frozen_teacher(model: MHSAClassifier) -> MHSAClassifier:
    """A copy of ``model`` that fine-tuning cannot change: eval mode, no gradients."""
    teacher = copy.deepcopy(model)
    return teacher.eval().requires_grad_(False)


def hidden_pairs(kept: list[int]) -> list[tuple[int, int]]:
    """(student block, teacher block), 1-based: each kept block with its original index.

    Example:
        >>> hidden_pairs([0, 2])  # block 1 of a 3-block model was dropped
        [(1, 1), (2, 3)]
    """
    return [(i + 1, original + 1) for i, original in enumerate(kept)]


def prune_loss_fn(cfg: PruneConfig, teacher: MHSAClassifier, kept: list[int], loop: LoopConfig) -> LossFn:
    """The fine-tuning loss of one step: ``(model, x, y) -> (loss, logits)`` for :func:`mhsa_cli.train.fit`.

    Args:
        cfg: ``kd_weight`` (alpha), ``kd_temperature`` (T), ``kd_hidden_weight``.
        teacher: the frozen unpruned model (:func:`frozen_teacher`).
        kept: original index of each current block (``Origin.layers``).
        loop: the fine-tuning loop (its mixup, if any, is shared by teacher and student).

    Returns:
        The loss function; ``loss_fn.teacher`` is ``teacher`` and ``loss_fn.pairs`` the hidden pairs
        (for records and tests).
    """
    pairs = hidden_pairs(kept) if cfg.kd_hidden_weight > 0 else []
    weights = LossWeights(cfg.kd_weight, cfg.kd_temperature, cfg.kd_hidden_weight, 0.0)
    identity = nn.ModuleList(nn.Identity() for _ in pairs)  # same width: states compare directly
    fn = make_loss_fn(teacher, weights, pairs, [], identity, make_mixup(loop))
    fn.teacher, fn.pairs = teacher, pairs  # type: ignore[attr-defined]
    return fn


def kd_plan(cfg: PruneConfig) -> dict[str, object] | None:
    """What ``pruning.json`` records of the distillation (None when off)."""
    if not kd_enabled(cfg):
        return None
    return {"teacher": "the unpruned input model", "alpha": cfg.kd_weight, "temperature": cfg.kd_temperature,
            "hidden_weight": cfg.kd_hidden_weight,
            "hidden_pairs": "each kept block with its original index" if cfg.kd_hidden_weight > 0 else None}
