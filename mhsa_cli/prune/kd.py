"""Fine-tuning after a pruning step with a teacher: the unpruned input model, or ``--kd-teacher``.

``--kd-weight alpha`` (with ``--finetune-epochs``) replaces the plain cross-entropy of
each step's fine-tuning by the distillation loss of :mod:`mhsa_cli.distill.losses`:

    (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))
    + kd_hidden_weight * mean over paired blocks of MSE(h_s, h_t)

The teacher ``t`` is by default the model as loaded, before any removal (not the previous
step's model); ``--kd-teacher CKPT`` names another float checkpoint of the same task and width
instead, e.g. the deeper model a distilled student came from (CoFi and TinyBERT distil the
pruned model from the fine-tuned original). Pruning keeps ``d_model``, so hidden states compare
directly (no learned map). Blocks are paired by their index in the *input* model (1-based;
0 = embeddings), so a pair survives layer dropping: ``--kd-hidden-layers 1:2`` pairs the input's
block 1 with the teacher's block 2. Default: each block with itself (the unpruned model), or
with a deeper ``--kd-teacher`` block ``i`` with block ``i * L_t // L`` (TinyBERT's uniform map:
3 -> 6 blocks pairs 1:2, 2:4, 3:6). The teacher is frozen: eval mode, ``requires_grad=False``,
run under ``no_grad`` (no graph kept).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..checkpoint import Checkpoint, load_checkpoint, load_model
from ..config import PruneConfig
from ..distill.losses import LossWeights, make_loss_fn
from ..distill.student import parse_pairs
from ..errors import MhsaError
from ..model import MHSAClassifier
from ..regularize import make_token_dropout
from ..train import LossFn, LoopConfig, make_mixup


@dataclass
class KDTeacher:
    """The frozen teacher of a prune's fine-tuning and how its blocks pair with the input model's."""

    model: MHSAClassifier
    blocks: dict[int, int]  # input model's block (1-based, 0 = embeddings) -> teacher block
    source: str  # "the unpruned input model" or the --kd-teacher folder
    checkpoint_id: str | None = None


def kd_enabled(cfg: PruneConfig) -> bool:
    """Whether fine-tuning distils from a teacher (``--kd-weight`` or ``--kd-hidden-weight`` > 0)."""
    return bool(cfg.finetune_epochs) and (cfg.kd_weight > 0 or cfg.kd_hidden_weight > 0)


def frozen_teacher(model: MHSAClassifier) -> MHSAClassifier:
    """A copy of ``model`` that fine-tuning cannot change: eval mode, no gradients."""
    teacher = copy.deepcopy(model)
    return teacher.eval().requires_grad_(False)


def block_map(cfg: PruneConfig, n_input: int, n_teacher: int, own: bool) -> dict[int, int]:
    """Input block -> teacher block for the hidden loss (``--kd-hidden-layers``, else the default).

    Example:
        >>> from mhsa_cli.config import PruneConfig
        >>> block_map(PruneConfig(checkpoint="m"), 3, 6, own=False)
        {1: 2, 2: 4, 3: 6}

    Raises:
        MhsaError: a malformed pair, an index out of range, or an input block paired twice.
    """
    if cfg.kd_hidden_layers:
        pairs = parse_pairs(cfg.kd_hidden_layers, n_input, n_teacher, flag="--kd-hidden-layers",
                            sides=("model", "teacher"))
        mapping = dict(pairs)
        if len(mapping) < len(pairs):
            raise MhsaError("--kd-hidden-layers: each block of the model pairs with one teacher block",
                            key="kd_hidden_layers")
        return mapping
    if own:
        return {i: i for i in range(1, n_input + 1)}
    return {i: max(1, i * n_teacher // n_input) for i in range(1, n_input + 1)}


def check_teacher(cfg: PruneConfig, ckpt: Checkpoint, teacher: Checkpoint) -> None:
    """Refuse a ``--kd-teacher`` that cannot teach ``ckpt``'s model (before any work).

    Raises:
        MhsaError: another input kind, vocabulary, class count or label set, or (with the
            hidden loss) another width; the model and teacher must read the same token ids.
    """
    m, t = ckpt.model_config, teacher.model_config
    for what, a, b in (("input", m.input_kind, t.input_kind), ("vocabulary size", m.vocab_size, t.vocab_size),
                       ("feature size", m.feature_dim, t.feature_dim), ("classes", m.num_classes, t.num_classes),
                       ("task", ckpt.task_spec.get("name"), teacher.task_spec.get("name")),
                       ("labels", ckpt.task_spec.get("labels"), teacher.task_spec.get("labels"))):
        if a != b:
            raise MhsaError(f"--kd-teacher {teacher.path} cannot teach this model: {what} {b} vs the model's {a}",
                            key="kd_teacher")
    if cfg.kd_hidden_weight > 0 and m.d_model != t.d_model:
        raise MhsaError(f"--kd-teacher {teacher.path}: width {t.d_model} vs the model's {m.d_model}; the hidden "
                        "loss compares states directly (use --kd-hidden-weight 0 for logits only)",
                        key="kd_teacher")


def teacher_source(cfg: PruneConfig, ckpt: Checkpoint) -> tuple[Checkpoint | None, dict[int, int]]:
    """``--kd-teacher``'s checkpoint (None: the unpruned input model) and the block pairs, every
    check done here, before any work.

    Raises:
        MhsaError: a missing or int8 teacher, one :func:`check_teacher` refuses, or bad pairs.
    """
    n = len(ckpt.model_config.heads)
    if not cfg.kd_teacher:
        return None, block_map(cfg, n, n, own=True)
    teacher = load_checkpoint(cfg.kd_teacher)
    teacher.require_kind("float", "distil from", "use the float teacher (int8 models run only for inference)")
    check_teacher(cfg, ckpt, teacher)
    return teacher, block_map(cfg, n, len(teacher.model_config.heads), own=False)


def kd_teacher(original: MHSAClassifier, teacher: Checkpoint | None, blocks: dict[int, int]) -> KDTeacher:
    """The frozen teacher of :func:`teacher_source`'s result: ``teacher``'s model, or a copy of the
    unpruned ``original``, on ``original``'s device."""
    if teacher is None:
        return KDTeacher(frozen_teacher(original), blocks, "the unpruned input model")
    model = load_model(teacher).to(next(original.parameters()).device).eval().requires_grad_(False)
    return KDTeacher(model, blocks, str(teacher.path), teacher.meta.get("id"))


def hidden_pairs(kept: list[int], blocks: dict[int, int] | None = None) -> list[tuple[int, int]]:
    """(model block, teacher block), 1-based (0 = embeddings): each kept block with its partner in
    ``blocks`` (keyed by original index; default: itself); unpaired blocks are left out.

    Example:
        >>> hidden_pairs([0, 2])  # block 1 of a 3-block model was dropped
        [(1, 1), (2, 3)]
        >>> hidden_pairs([0, 2], {0: 0, 1: 2, 3: 6})  # a 6-block teacher
        [(0, 0), (1, 2), (2, 6)]
    """
    blocks = {i + 1: i + 1 for i in kept} if blocks is None else blocks
    pairs = [(0, blocks[0])] if 0 in blocks else []
    return pairs + [(i + 1, blocks[o + 1]) for i, o in enumerate(kept) if o + 1 in blocks]


def prune_loss_fn(cfg: PruneConfig, teacher: KDTeacher, kept: list[int], loop: LoopConfig) -> LossFn:
    """The fine-tuning loss of one step: ``(model, x, y) -> (loss, logits)`` for :func:`mhsa_cli.train.fit`.

    Args:
        cfg: ``kd_weight`` (alpha), ``kd_temperature`` (T), ``kd_hidden_weight``.
        teacher: the frozen teacher and its block pairs (:func:`kd_teacher`).
        kept: original index of each current block (``Origin.layers``).
        loop: the fine-tuning loop (its mixup or word dropout, if any, is shared by teacher and student).

    Returns:
        The loss function; ``loss_fn.teacher`` is the teacher model and ``loss_fn.pairs`` the hidden
        pairs (for records and tests).
    """
    pairs = hidden_pairs(kept, teacher.blocks) if cfg.kd_hidden_weight > 0 else []
    weights = LossWeights(cfg.kd_weight, cfg.kd_temperature, cfg.kd_hidden_weight, 0.0)
    identity = nn.ModuleList(nn.Identity() for _ in pairs)  # same width: states compare directly
    kd = make_loss_fn(teacher.model, weights, pairs, [], identity, make_mixup(loop))
    drop = make_token_dropout(loop)
    fn = kd if drop is None else lambda model, x, y: kd(model, drop(x), y)  # teacher and student: the same words
    fn.teacher, fn.pairs = teacher.model, pairs  # type: ignore[attr-defined]
    return fn


def kd_plan(cfg: PruneConfig, teacher: KDTeacher | None) -> dict[str, Any] | None:
    """What ``pruning.json`` records of the distillation (None when off: no teacher)."""
    if teacher is None:
        return None
    return {"teacher": teacher.source, "teacher_id": teacher.checkpoint_id,
            "alpha": cfg.kd_weight, "temperature": cfg.kd_temperature, "hidden_weight": cfg.kd_hidden_weight,
            "hidden_pairs": [f"{i}:{t}" for i, t in sorted(teacher.blocks.items())] if cfg.kd_hidden_weight > 0
            else None}
