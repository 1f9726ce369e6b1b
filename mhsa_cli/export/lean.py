"""The forward that ``mhsa export`` traces: the model's own math in fewer ONNX nodes.

At batch 1 a small model's ORT latency is mostly per-node dispatch and the
parallel sections of tiny ops, not arithmetic: the quickstart student's int8
graph ran 48 nodes in ~30 us. :class:`LeanExport` runs the same modules and
weights as :meth:`MHSAClassifier.forward <mhsa_cli.model.MHSAClassifier.forward>`
(mirrors it: embed, blocks with the pooled-row last block, classify) with three
export-only changes, each exact:

* cls token (token models): the ids padded with id V (the padding mask needs them
  anyway) gather from ``[embedding table; cls]`` (V + 1 rows), whose row V is the
  cls row (1 node where Slice/Shape/Expand/Concat took 5);
* attention (``fuse_attention``): each layer with heads is one
  ``com.microsoft.MultiHeadAttention`` node (:class:`ExportAttention`) where the
  head split, two MatMuls, mask, Softmax, NaN guard and merge took ~20 standard
  nodes that ORT's fusions do not match; its key padding mask (B, T) int32 is
  made once. ORT's CPU and CUDA providers implement it; other runtimes may not
  (``--no-fuse-attention`` keeps standard ops). Masked keys get -10000, whose
  softmax weight underflows to 0 as -inf does; a sample with no valid key (all
  padding, only possible without a cls token) is multiplied by 0, as SDPA gives 0.
  ``--no-fuse-attention`` writes the same math in standard ops (:func:`_attend`:
  the -10000 score bias, the same guard), not torch's SDPA, whose translations
  carry a NaN guard and, in dynamo's, shape arithmetic around the key transpose
  (measured, 2-layer cls model, ORT's int8 graph: TorchScript 68 -> 66 nodes, dynamo 90 -> 68);
* q/k/v (``fuse_qkv``): one product per layer against the stacked weights (k|v
  in a last block that computes the pooled row alone), split in three, made in
  the traced module so every exporter sees it (it was an ONNX rewrite that found
  the projections by node name). ORT int8, 1 thread, batch 1: 0.93x the latency
  of three products (quickstart student and baseline); batch 32: 0.98-1.03x.

Measured, quickstart student, ORT int8, p50 in one run (5 alternating blocks of
0.3 s): 48 -> 29 nodes; batch 1: 1 thread 0.0316 -> 0.0272 ms, 2 threads 0.0447 ->
0.0398 ms (the attention node alone: 0.0289 / 0.0409); batch 32: 0.294 -> 0.295 /
0.338 -> 0.313 ms. A Slice of the position rows from ``Shape(h, start=1, end=2)``
would save 2 more nodes (~1 us), but an autograd Function that reads its input's
shape breaks the TorchScript exporter's peephole pass, so positions stay as traced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ops import ATTENTION_CALLS

MASKED = -10000.0  # a padding key's score bias: ORT's MultiHeadAttention value (softmax weight 0 in float32)


@dataclass
class Masks:
    """What :class:`ExportAttention` gets in place of the (B, 1, 1, T) bool mask."""

    kpm: torch.Tensor | None  # (B, T) int32, 1 = real token (the MultiHeadAttention node)
    bias: torch.Tensor | None  # (B, 1, 1, T) float, 0 = real token, MASKED = padding (standard ops)
    valid: torch.Tensor | None  # (B, 1, 1) float: 0 for a sample with no real token; None = never


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, n_heads: int,
            head_dim: int) -> torch.Tensor:
    """Attention in standard ops, what the MultiHeadAttention node computes: q (B, Q, H*S); k, v (B, T, H*S);
    bias (B, 1, 1, T) 0 or MASKED -> (B, Q, H*S)."""
    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], -1, n_heads, head_dim).transpose(1, 2)  # (B, H, ., S)

    scores = heads(q) @ heads(k).transpose(-2, -1) * (1 / math.sqrt(head_dim))  # (B, H, Q, T)
    if bias is not None:
        scores = scores + bias
    y = (scores.softmax(dim=-1) @ heads(v)).transpose(1, 2)  # (B, Q, H, S)
    return y.reshape(y.shape[0], -1, n_heads * head_dim)


def _stacked(*linears: nn.Linear) -> nn.Linear:
    """One ``nn.Linear`` whose outputs are the given layers' outputs side by side (same input)."""
    w = torch.cat([lin.weight for lin in linears])  # (sum of outputs, D)
    out = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return out.requires_grad_(False)


class ExportAttention(nn.Module):
    """An :class:`~mhsa_cli.model.modules.Attention` with heads, for export (eval mode: no gates, no
    probabilities): the same weights and math in fewer graph nodes.

    * ``qkv``: q, k and v from one product, ``x @ [Wq | Wk | Wv] + [bq | bk | bv]`` split in three
      (a layer that computes the pooled row alone, ``query_row``: q from that row, k|v from one
      product), so the graph holds one MatMul (int8: one ``MatMulInteger``) where three read the
      same input; stacked here, in the traced module, not found in the graph by node name;
    * ``mha``: the attention as one ``MultiHeadAttention`` node, this exporter's op from
      :data:`.ops.ATTENTION_CALLS`; None: :func:`_attend`, the node's math in standard ONNX ops.
    """

    def __init__(self, attn: nn.Module, mha: Callable[..., torch.Tensor] | None, qkv: bool,
                 query_row: bool = False):
        super().__init__()
        self.inner, self.mha, self.query_row = attn, mha, query_row
        self.width = attn.n_heads * attn.head_dim  # H*S
        projections = (attn.k, attn.v) if query_row else (attn.q, attn.k, attn.v)
        self.stacked = _stacked(*projections) if qkv else None

    def _qkv(self, x: torch.Tensor, query: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        a = self.inner
        if self.stacked is None:
            return a.q(x if query is None else query), a.k(x), a.v(x)
        parts = self.stacked(x).split(self.width, dim=-1)  # (B, T, H*S) each
        return (a.q(query), *parts) if self.query_row else parts

    def forward(self, x: torch.Tensor, masks: Masks | None = None, gate: Any = None,
                need_weights: bool = False, query: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if (query is not None) != self.query_row and self.stacked is not None:
            raise RuntimeError("ExportAttention built for another query shape")  # lean_export's bug, not input
        q, k, v = self._qkv(x, query)
        a = self.inner
        if self.mha is None:
            y = _attend(q, k, v, None if masks is None else masks.bias, a.n_heads, a.head_dim)
        else:
            kpm = None if masks is None else masks.kpm
            y = self.mha(q, k, v, kpm, a.n_heads, 1 / math.sqrt(a.head_dim))  # the model's scale, stated
        if masks is not None and masks.valid is not None:
            y = y * masks.valid
        return self.inner.o(y), None


class LeanExport(nn.Module):
    """``x -> logits`` of an :class:`~mhsa_cli.model.MHSAClassifier` (eval), for tracing (see the module
    docstring). ``fused``: the blocks' attention modules are :class:`ExportAttention`."""

    def __init__(self, model: nn.Module, fused: bool):
        super().__init__()
        self.m, self.fused = model, fused
        c = model.config
        # [embedding table; cls] (V + 1, D): one Gather gives the cls row and the tokens (a buffer made
        # here, not a torch.cat in the graph that only constant folding would remove)
        with_cls = model.cls is not None and c.input_kind == "tokens"
        table = torch.cat([model.embed.weight, model.cls.view(1, -1)]).detach() if with_cls else None
        self.register_buffer("table", table, persistent=False)
        # the exporter restores this module's mode afterwards, recursively: a new module's default
        # (training) would leave the model in training mode (dropout on) after an export
        self.train(model.training)

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.table is None:
            return self.m._tokens(x)
        ids = F.pad(x, (1, 0), value=self.table.shape[0] - 1)  # (B, T'): the cls row first
        return F.embedding(ids, self.table), ids != self.m.config.pad_id  # (B, T', D), (B, T')

    def _masks(self, pad: torch.Tensor | None) -> Masks | None:
        if pad is None:
            return None
        kpm = pad.to(torch.int32) if self.fused else None
        bias = None if self.fused else (1 - pad.to(torch.float32))[:, None, None, :] * MASKED  # (B, 1, 1, T)
        if self.m.cls is not None:  # a cls token is never padding: every sample has a key
            return Masks(kpm, bias, None)
        # min(number of keys, 1), not pad.any(): ORT's symbolic shape inference (int8 pre-processing)
        # cannot follow ReduceMax with its axes as an input (opset >= 18)
        valid = pad.to(torch.float32).sum(dim=1, keepdim=True).clamp(max=1)[:, :, None]  # (B, 1, 1)
        return Masks(kpm, bias, valid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.m
        h, pad = self._tokens(x)
        h = m._add_positions(h)
        masks, first = self._masks(pad), m.first_only
        for i, block in enumerate(m.blocks):
            h, _ = block(h, masks, first_only=first and i == len(m.blocks) - 1)
        return m._classify(h, pad)


@contextmanager
def lean_export(model: nn.Module, fuse_attention: bool = True, fuse_qkv: bool = True,
                exporter: str = "dynamo") -> Iterator[tuple[nn.Module, dict[str, int]]]:
    """(the module to trace, {"fused_attention_layers": n, "fused_qkv_layers": n}) for ``model``.

    Every layer with heads runs :class:`ExportAttention` (with ``exporter``'s attention op) inside its
    block while the context is open (restored after, also on error).
    """
    last, mha = len(model.blocks) - 1, ATTENTION_CALLS[exporter] if fuse_attention else None
    swapped = [(b, b.attn, ExportAttention(b.attn, mha, fuse_qkv, model.first_only and i == last))
               for i, b in enumerate(model.blocks) if b.attn.n_heads > 0]
    try:
        for b, _, export_attn in swapped:
            b.attn = export_attn
        n = len(swapped)
        yield LeanExport(model, fuse_attention), {"fused_attention_layers": n if fuse_attention else 0,
                                                  "fused_qkv_layers": n if fuse_qkv else 0}
    finally:
        for b, attn, _ in swapped:
            b.attn = attn
