"""Inputs built from a model's own config, for the checks that need no data set.

Head removal proves its surgery on them, torch-pruning traces them, and ``mhsa
export`` / ``mhsa quantize`` run them where a checkpoint has no data (an
imported encoder without ``--data``, or a checkpoint whose data file is gone).
"""

from __future__ import annotations

import torch
from torch import nn

PROBE_TOKENS = 64  # imported encoders allow 512 positions; 64 probes them as well


def probe_input(model: nn.Module, batch: int = 8, seed: int = 0) -> torch.Tensor:
    """A fixed random input batch for ``model``, on its device.

    Args:
        model: an :class:`~mhsa_cli.model.MHSAClassifier` (its ``config`` is read).
        batch: rows.
        seed: the generator's seed (same seed, same rows).

    Returns:
        Token models: ``(B, T)`` int64 ids, ``T = min(max_len, 64)``, drawn from the
        vocabulary without the padding id, each row right-padded with ``pad_id`` after a
        seeded length in ``[1, T]`` (padding exercises the attention mask). Feature
        models: ``(B, max_len, F)`` standard normal float32.
    """
    c, gen = model.config, torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    if c.input_kind == "features":
        return torch.randn(batch, c.max_len, c.feature_dim, generator=gen).to(device)  # (B, T, F)
    T = min(c.max_len, PROBE_TOKENS)
    x = torch.randint(1, c.vocab_size, (batch, T), generator=gen)  # (B, T)
    x[x == c.pad_id] = 0  # pad_id 1 (RoBERTa): 0 is a real token there
    lengths = torch.randint(1, T + 1, (batch, 1), generator=gen)
    x[torch.arange(T)[None, :] >= lengths] = c.pad_id
    return x.to(device)
