"""Knowledge distillation: train a smaller student from a teacher (``mhsa distill``).

Three modules:

1. :mod:`.losses` -- where the distillation losses are: :func:`kd_loss` (logits,
   with ``T^2``), :func:`hidden_mse` (hidden states, through learned maps from
   :func:`make_projections`), :func:`attention_kl` (head-averaged attention),
   weighted by :class:`LossWeights` and combined by :func:`make_loss_fn`.
2. :mod:`.student` -- the student's shape (:func:`student_config`, :data:`SHRINK`),
   its init from the teacher (:func:`layer_map`, :func:`match_teacher_blocks`,
   :func:`init_from_teacher`) and the layer pairs (:func:`parse_pairs`,
   :func:`attention_pairs`).
3. :mod:`.command` -- :func:`distill` (``mhsa distill``): :func:`load_teacher`
   (frozen, float only), :func:`make_plan` (:class:`DistillPlan`, every bad input
   raised before training), :func:`train_student`, save; returns a
   :class:`DistillResult`.

Everything public is importable from here (``from mhsa_cli.distill import X``).
"""

from __future__ import annotations

from .command import INT8_HINT, DistillPlan, DistillResult, distill, load_teacher, make_plan, train_student
from .losses import LossWeights, attention_kl, hidden_mse, kd_loss, make_loss_fn, make_projections
from .student import (DEPTH_ONLY, SHRINK, attention_pairs, init_from_teacher, layer_map, match_teacher_blocks,
                      parse_pairs, student_config)

__all__ = [
    "DEPTH_ONLY", "DistillPlan", "DistillResult", "INT8_HINT", "LossWeights", "SHRINK", "attention_kl",
    "attention_pairs", "distill", "hidden_mse", "init_from_teacher", "kd_loss", "layer_map", "load_teacher",
    "make_loss_fn", "make_plan", "make_projections", "match_teacher_blocks", "parse_pairs", "student_config",
    "train_student",
]
