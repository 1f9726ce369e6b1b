"""Turning new texts into model inputs: the one place predict (and anything else) asks for a
checkpoint's tokenizer. Training data is encoded by the tasks themselves (:mod:`.text`,
:mod:`.hf_text`) with the same stored tokenizers; :func:`spec_encoder` picks between them
from a task spec, so a checkpoint's text is tokenized the same way at train, predict and
export time."""

from __future__ import annotations

from typing import Any, Iterator

import torch

from . import hf_text
from .text import spec_tokenizer


def spec_encoder(spec: dict[str, Any]) -> tuple[Any, bool, int]:
    """(tokenizer, add special tokens?, padding id) of a ``text`` or ``hf-text`` spec.

    ``hf-text`` (imported encoders): the stored tokenizer truncates to ``max_len`` and adds its
    [CLS]/[SEP] (or <s>/</s>) itself; padding is the model's ``pad_id``.
    """
    if spec.get("name") == hf_text.NAME:
        return hf_text.make_tokenizer(spec["tokenizer"], int(spec["max_len"])), True, int(spec.get("pad_id", 0))
    return spec_tokenizer(spec), False, 0


def encode_sorted(tok: Any, texts: list[str], max_len: int, batch_size: int, special: bool = False,
                   pad_id: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (row positions, (B, L) ids) batches of ``texts`` sorted by length; L = longest row."""
    ids = [e.ids[:max_len] or [1] for e in tok.encode_batch(texts, add_special_tokens=special)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        part = order[start: start + batch_size]
        x = torch.full((len(part), len(ids[part[-1]])), pad_id, dtype=torch.long)  # (B, L), padded
        for row, i in enumerate(part):
            x[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
        yield torch.tensor(part), x
