"""Training regularisers and the loss they shape: mixup, token dropout, label-smoothed
cross-entropy (:func:`cross_entropy_loss`), used by :func:`mhsa_cli.train.fit` and distillation."""

from __future__ import annotations

import random
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import MhsaError

# loss_fn(model, x, y) -> (loss, logits)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

class Mixup:
    """mixup (Zhang et al., 2018): train on convex mixes of input pairs and of their labels.

    Each call draws ``lam ~ Beta(strength, strength)`` and a permutation of the
    batch and returns ``lam * x + (1 - lam) * x[perm]``; the loss is then
    ``lam * L(y) + (1 - lam) * L(y[perm])`` (:func:`mixed`). Seeded: the same
    seed gives the same mixes. Feature inputs only (token ids cannot be mixed).
    """

    def __init__(self, strength: float, seed: int):
        if strength <= 0:
            raise ValueError(f"mixup strength must be > 0, got {strength}")
        self.strength = strength
        self._rng = random.Random(seed)
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(mixed x, the partner labels ``y[perm]``, lam)."""
        lam = self._rng.betavariate(self.strength, self.strength)
        perm = torch.randperm(x.shape[0], generator=self._gen).to(x.device)
        return lam * x + (1.0 - lam) * x[perm], y[perm], lam


def make_mixup(loop: Any) -> Mixup | None:
    """The loop's :class:`Mixup` (seeded with ``loop.seed``), or None when ``loop.mixup`` is 0."""
    return Mixup(loop.mixup, loop.seed) if loop.mixup > 0 else None


def mixed(loss: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, y2: torch.Tensor | None,
          lam: float = 1.0) -> torch.Tensor:
    """``lam * loss(y) + (1 - lam) * loss(y2)``; just ``loss(y)`` without a partner ``y2``."""
    return loss(y) if y2 is None else lam * loss(y) + (1.0 - lam) * loss(y2)


UNK_ID = 1  # the text task's <unk> id (mhsa_cli.tasks.tokenizer)


class TokenDropout:
    """Word dropout: each real token of a training batch becomes ``<unk>`` with probability ``p``.

    Token ids only (0 = padding and 1 = ``<unk>`` in every tokenizer of the text task;
    both are left alone, so masks and lengths do not change). The model learns to use
    the words around one it has not seen, as it must on new text. Seeded: the same
    seed drops the same tokens.
    """

    def __init__(self, p: float, seed: int):
        if not 0.0 < p < 1.0:
            raise ValueError(f"token dropout must be in (0, 1), got {p}")
        self.p = p
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids -> the same shape with dropped tokens set to 1 (``<unk>``)."""
        drop = torch.rand(x.shape, generator=self._gen).to(x.device) < self.p  # (B, T) bool
        return torch.where(drop & (x > UNK_ID), torch.full_like(x, UNK_ID), x)


def make_token_dropout(loop: Any) -> TokenDropout | None:
    """The loop's :class:`TokenDropout` (seeded with ``loop.seed``), or None when ``loop.token_dropout`` is 0."""
    return TokenDropout(loop.token_dropout, loop.seed) if loop.token_dropout > 0 else None


def cross_entropy_loss(label_smoothing: float = 0.0, mixup: Mixup | None = None,
                       token_dropout: TokenDropout | None = None) -> LossFn:
    """Cross-entropy for :func:`fit`, on mixed inputs and labels when ``mixup`` is given,
    on token ids with some replaced by ``<unk>`` when ``token_dropout`` is given."""
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        y2, lam = None, 1.0
        if token_dropout is not None:
            x = token_dropout(x)
        if mixup is not None:
            x, y2, lam = mixup(x, y)
        logits = model(x)
        return mixed(lambda t: F.cross_entropy(logits, t, label_smoothing=label_smoothing), y, y2, lam), logits

    return loss_fn


def check_mixup(strength: float, input_kind: str, task: str) -> None:
    """Refuse mixup on token inputs (ids cannot be mixed) in one line."""
    if strength > 0 and input_kind != "features":
        what = "token ids" if input_kind == "tokens" else f"{input_kind} inputs"
        raise MhsaError(f"--mixup mixes input features, but task '{task}' takes {what}; "
                        "use it with a feature task such as digits")
