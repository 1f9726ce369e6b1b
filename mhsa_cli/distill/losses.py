"""Where the distillation losses are: the loss terms and the loss for ``fit``.

The loss is made of up to three weighted terms (weights: :class:`LossWeights`):

* logits (Hinton et al.), :func:`kd_loss`:
  ``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(p_t^T || p_s^T)``
  with ``p^T = softmax(logits / T)``. The ``T^2`` factor keeps the soft-target
  gradients on the same scale as the hard-label ones when ``T`` changes.
  Defaults: ``alpha = 0.5``, ``T = 2``.
* hidden states, :func:`hidden_mse`: MSE between paired student and teacher
  layers (``s:t``, 1-based blocks, 0 = embeddings; default last:last), over real
  (non-padding) tokens, through a learned ``nn.Linear`` map
  (:func:`make_projections`) when the widths differ. The maps are trained with
  the student but **not saved** in the student checkpoint.
* attention (MiniLM-style), :func:`attention_kl`: KL(teacher || student) between
  the *head-averaged* attention maps of the same layer pairs (so head counts may
  differ), over real query rows.

Each term is averaged over its layer pairs and then multiplied by its weight
(:func:`make_loss_fn`, the ``loss_fn`` handed to :func:`mhsa_cli.train.fit`).
With mixup (:class:`mhsa_cli.train.Mixup`) teacher and student see the same
mixed inputs and the hard-label term uses the mixed labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model import ModelConfig
from ..train import LossFn, Mixup, mixed


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



def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))``, summed over classes, averaged over the batch."""
    log_s = F.log_softmax(student_logits / temperature, dim=-1)  # (B, C)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)


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
    return kd_combine(F.cross_entropy(student_logits, labels), student_logits, teacher_logits, alpha, temperature)


def kd_combine(ce: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               alpha: float, temperature: float) -> torch.Tensor:
    """``(1 - alpha) * ce + alpha * T^2 * KL``: the KD loss around a given hard-label term ``ce``
    (plain in :func:`kd_loss`, mixed under mixup in :func:`make_loss_fn`)."""
    return (1.0 - alpha) * ce + alpha * temperature ** 2 * soft_kl(student_logits, teacher_logits, temperature)


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
                 attn_pairs: list[tuple[int, int]], projections: nn.ModuleList | None = None,
                 mixup: Mixup | None = None) -> LossFn:
    """The distillation loss for :func:`mhsa_cli.train.fit`: ``(model, x, y) -> (loss, logits)``.

    The teacher runs under ``no_grad``; hidden states and attentions are only
    computed when their weight is positive.

    Args:
        teacher: eval-mode model with frozen parameters.
        weights: loss weights.
        hidden_pairs, attn_pairs: layer pairs (student, teacher).
        projections: one module per hidden pair (``nn.Identity`` when widths match).
        mixup: mix each batch first; teacher and student see the same mixed
            inputs, and the hard-label term uses the mixed labels.
    """
    use_hidden = weights.hidden > 0 and bool(hidden_pairs)
    use_attn = weights.attention > 0 and bool(attn_pairs)
    features = use_hidden or use_attn

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        y2, lam = None, 1.0
        if mixup is not None:
            x, y2, lam = mixup(x, y)
        with torch.no_grad():
            t = teacher(x, features=features, output_attentions=use_attn)
        s = model(x, features=features, output_attentions=use_attn)
        s_logits, t_logits = (s.logits, t.logits) if features else (s, t)
        # = lam * kd(y) + (1 - lam) * kd(y2): the hard-label term mixed, the soft term once
        ce = mixed(lambda t: F.cross_entropy(s_logits, t), y, y2, lam)
        loss = kd_combine(ce, s_logits, t_logits, weights.alpha, weights.temperature)
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
