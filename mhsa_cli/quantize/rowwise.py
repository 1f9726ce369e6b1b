"""Weight-only int8 embedding tables, one symmetric scale per row: the one formula
both int8 paths use.

An encoder's embedding table is most of its file when the encoder is small
(MiniLM-L6: the 30,522 x 384 word table is 44.7 MiB of 86.7), and a lookup has
no product to run in int8, so the table is stored as int8 and the rows a batch
gathers are scaled back to float:

* ``mhsa quantize`` (torch): :class:`Int8Embedding` replaces each ``nn.Embedding``
  named by :func:`embedding_names`;
* ``mhsa export --int8`` (ONNX Runtime): :func:`mhsa_cli.export.int8.int8_embeddings`
  rewrites each such ``Gather`` with the same :func:`rowwise_int8`.

Only torch is imported here, so either path can use it.
"""

from __future__ import annotations

import torch
from torch import nn

EMBED_MIN_ELEMENTS = 1024  # smaller tables (a few KiB, e.g. BERT's 2 x D token types) stay float


def rowwise_int8(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, D) float -> q (V, D) int8, scale (V, 1) float32 with ``table ~ q * scale``.

    scale = max |row| / 127 (symmetric, zero point 0; an all-zero row keeps scale 1 and
    stays exactly 0, e.g. a padding row), q = round(row / scale) in [-127, 127], so each
    value is off by at most scale / 2.
    """
    w = table.detach().float()
    scale = w.abs().amax(dim=1, keepdim=True) / 127.0  # (V, 1)
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8)
    return q, scale


class Int8Embedding(nn.Module):
    """An ``nn.Embedding`` (inference) stored as int8: ids (...) -> (..., D) float.

    Buffers ``weight`` (V, D) int8 and ``weight_scale`` (V, 1) float32 (:func:`rowwise_int8`);
    a lookup gathers both and multiplies (the int8 table is what stays in memory). Runs on
    any device, no torch.ao.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, 1))

    @classmethod
    def from_float(cls, emb: nn.Embedding) -> "Int8Embedding":
        out = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        out.weight, out.weight_scale = rowwise_int8(emb.weight)
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids].float() * self.weight_scale[ids]  # (..., D) * (..., 1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per-row"


def embedding_names(model: nn.Module) -> list[str]:
    """Names of the ``nn.Embedding`` modules of ``model`` worth storing as int8
    (at least :data:`EMBED_MIN_ELEMENTS` values, weight not shared with another module)."""
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    return [n for n, m in model.named_modules()
            if type(m) is nn.Embedding and m.weight.numel() >= EMBED_MIN_ELEMENTS and owners[id(m.weight)] == 1]
