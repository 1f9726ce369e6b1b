"""The forward that ``mhsa export`` traces: the model's own math in fewer ONNX nodes.

At batch 1 a small model's ORT latency is mostly per-node dispatch and the
parallel sections of tiny ops, not arithmetic: the quickstart student's int8
graph ran 48 nodes in ~30 us. :class:`LeanExport` runs the same modules and
weights as :meth:`MHSAClassifier.forward <mhsa_cli.model.MHSAClassifier.forward>`
(mirrors it: embed, blocks with the pooled-row last block, classify) with three
export-only changes, each exact:

* cls token (token models): the ids padded with -1 (the padding mask needs them
  anyway) gather from ``[embedding table; cls]``; ONNX ``Gather`` counts -1 from
  the end, so that is the cls row (1 node where Slice/Shape/Expand/Concat took 5);
* attention (``fuse_attention``): each layer with heads is one
  ``com.microsoft.MultiHeadAttention`` node (:class:`ExportAttention`) where the
  head split, two MatMuls, mask, Softmax, NaN guard and merge took ~20 standard
  nodes that ORT's fusions do not match; its key padding mask (B, T) int32 is
  made once. ORT's CPU and CUDA providers implement it; other runtimes may not
  (``--no-fuse-attention`` keeps standard ops). Masked keys get -10000, whose
  softmax weight underflows to 0 as -inf does; a sample with no valid key (all
  padding, only possible without a cls token) is multiplied by 0, as SDPA gives 0;
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DOMAIN, OP = "com.microsoft", "MultiHeadAttention"
ATTENTION_OP = f"{DOMAIN}.{OP}"  # as export.json names it
OPSET = {DOMAIN: 1}  # torch.onnx.export(custom_opsets=...)


class _GatherRows(torch.autograd.Function):
    """``table[ids]`` with negative ids counted from the end, as ONNX ``Gather`` does."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return table[ids]  # (V, D)[(B, T)] -> (B, T, D)

    @staticmethod
    def symbolic(g: Any, table: Any, ids: Any) -> Any:
        return g.op("Gather", table, ids, axis_i=0)


class _MHA(torch.autograd.Function):
    """SDPA over packed heads; exported as one ``MultiHeadAttention`` node."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kpm: torch.Tensor | None,
                n_heads: int) -> torch.Tensor:
        # q (B, Q, H*S); k, v (B, T, H*S); kpm (B, T) int32, 1 = attend -> (B, Q, H*S)
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], t.shape[1], n_heads, -1).transpose(1, 2)  # (B, H, ., S)

        mask = None if kpm is None else kpm.bool()[:, None, None, :]
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask,
                                           scale=1 / math.sqrt(q.shape[-1] // n_heads))
        return y.transpose(1, 2).reshape(q.shape)

    @staticmethod
    def symbolic(g: Any, q: Any, k: Any, v: Any, kpm: Any, n_heads: int) -> Any:
        attrs: dict[str, Any] = {"num_heads_i": n_heads}
        width = q.type().sizes()[-1] if q.type().kind() == "TensorType" and q.type().sizes() else None
        if width:  # ORT's default scale, stated: 1 / sqrt(head_dim)
            attrs["scale_f"] = 1 / math.sqrt(width // n_heads)
        if kpm is None or kpm.node().mustBeNone():
            y = g.op(f"{DOMAIN}::{OP}", q, k, v, **attrs)
        else:
            bias = g.op("prim::Constant").setType(torch._C.OptionalType.ofTensor())  # omitted input
            y = g.op(f"{DOMAIN}::{OP}", q, k, v, bias, kpm, **attrs)
        return y.setType(q.type())  # typed: no "shape inference missing" notice


@dataclass
class Masks:
    """What :class:`ExportAttention` gets in place of the (B, 1, 1, T) bool mask."""

    kpm: torch.Tensor  # (B, T) int32, 1 = real token
    valid: torch.Tensor | None  # (B, 1, 1) float: 0 for a sample with no real token; None = never


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
    * ``mha``: the attention as one :class:`_MHA` node, else the model's own
      :meth:`~mhsa_cli.model.modules.Attention.attend` (standard ONNX ops).
    """

    def __init__(self, attn: nn.Module, mha: bool, qkv: bool, query_row: bool = False):
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

    def forward(self, x: torch.Tensor, masks: Masks | torch.Tensor | None = None, gate: Any = None,
                need_weights: bool = False, query: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if (query is not None) != self.query_row and self.stacked is not None:
            raise RuntimeError("ExportAttention built for another query shape")  # lean_export's bug, not input
        q, k, v = self._qkv(x, query)
        if not self.mha:  # masks: the model's (B, 1, 1, T) bool mask
            return self.inner.attend(q, k, v, masks)
        kpm = None if masks is None else masks.kpm
        y = _MHA.apply(q, k, v, kpm, self.inner.n_heads)
        if masks is not None and masks.valid is not None:
            y = y * masks.valid
        return self.inner.o(y), None


class LeanExport(nn.Module):
    """``x -> logits`` of an :class:`~mhsa_cli.model.MHSAClassifier` (eval), for tracing (see the module
    docstring). ``fused``: the blocks' attention modules are :class:`ExportAttention`."""

    def __init__(self, model: nn.Module, fused: bool):
        super().__init__()
        self.m, self.fused = model, fused
        # the exporter restores this module's mode afterwards, recursively: a new module's default
        # (training) would leave the model in training mode (dropout on) after an export
        self.train(model.training)

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        m, c = self.m, self.m.config
        if m.cls is None or c.input_kind != "tokens":
            return m._tokens(x)
        ids = F.pad(x, (1, 0), value=-1)  # (B, T'): -1 = the cls row, the table's last
        table = torch.cat([m.embed.weight, m.cls.view(1, -1)])  # (V + 1, D), one constant after folding
        return _GatherRows.apply(table, ids), ids != c.pad_id

    def _masks(self, pad: torch.Tensor | None) -> Masks | torch.Tensor | None:
        if pad is None:
            return None
        if not self.fused:
            return pad[:, None, None, :]  # what the model's own attention takes
        guard = self.m.cls is None  # a cls token is never padding: every sample has a key
        return Masks(pad.to(torch.int32), pad.any(dim=1)[:, None, None].to(torch.float32) if guard else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.m
        h, pad = self._tokens(x)
        h = m._add_positions(h)
        masks, first = self._masks(pad), m.first_only
        for i, block in enumerate(m.blocks):
            h, _ = block(h, masks, first_only=first and i == len(m.blocks) - 1)
        return m._classify(h, pad)


@contextmanager
def lean_export(model: nn.Module, fuse_attention: bool = True,
                fuse_qkv: bool = True) -> Iterator[tuple[nn.Module, dict[str, int]]]:
    """(the module to trace, {"fused_attention_layers": n, "fused_qkv_layers": n}) for ``model``.

    Every layer with heads runs :class:`ExportAttention` inside its block while the context is open
    (restored after, also on error); with neither fusion the model's own attention is traced.
    """
    last = len(model.blocks) - 1
    swapped = [(b, b.attn, ExportAttention(b.attn, fuse_attention, fuse_qkv, model.first_only and i == last))
               for i, b in enumerate(model.blocks) if b.attn.n_heads > 0] if fuse_attention or fuse_qkv else []
    try:
        for b, _, export_attn in swapped:
            b.attn = export_attn
        n = len(swapped)
        yield LeanExport(model, fuse_attention), {"fused_attention_layers": n if fuse_attention else 0,
                                                  "fused_qkv_layers": n if fuse_qkv else 0}
    finally:
        for b, attn, _ in swapped:
            b.attn = attn
