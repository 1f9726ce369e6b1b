"""The fused attention op for each exporter, and the dynamo exporter's translations.

Both exporters write each attention layer as one ``com.microsoft.MultiHeadAttention``
node (ONNX Runtime's CPU and CUDA providers implement it), from their own kind of op:

* TorchScript (``torch.onnx.export(..., dynamo=False)``): :class:`_MHA`, an autograd
  Function whose ``symbolic`` writes the node;
* dynamo (``torch.export`` + onnxscript): ``torch.ops.mhsa.attention``, a
  ``torch.library`` custom op that ``torch.export`` keeps as one call, and
  :func:`attention_onnx`, its translation (:func:`translation_table`).

Each runs SDPA in torch (the traced value), the node's result in ORT. The dynamo
table also writes ``aten.gelu`` in the order TorchScript did, ``x * (1 + erf(x / sqrt 2)) * 0.5``:
ORT's fusion matches that order (Add + Gelu -> one ``BiasGelu``) and not torchlib's
``x * (0.5 * (1 + erf))`` (measured: 2 x 5 more nodes in the session's graph of a 2-layer model).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

DOMAIN, OP = "com.microsoft", "MultiHeadAttention"
ATTENTION_OP = f"{DOMAIN}.{OP}"  # as export.json names it
OPSET = {DOMAIN: 1}  # torch.onnx.export(custom_opsets=...)


def sdpa_packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kpm: torch.Tensor | None, n_heads: int,
                scale: float) -> torch.Tensor:
    """q (B, Q, H*S); k, v (B, T, H*S); kpm (B, T) int32, 1 = attend -> (B, Q, H*S), what the node computes."""
    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], n_heads, -1).transpose(1, 2)  # (B, H, ., S)

    mask = None if kpm is None else kpm.bool()[:, None, None, :]
    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask, scale=scale)
    return y.transpose(1, 2).reshape(q.shape)


class _MHA(torch.autograd.Function):
    """TorchScript exporter: :func:`sdpa_packed`, exported as one ``MultiHeadAttention`` node."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kpm: torch.Tensor | None,
                n_heads: int, scale: float) -> torch.Tensor:
        return sdpa_packed(q, k, v, kpm, n_heads, scale)

    @staticmethod
    def symbolic(g: Any, q: Any, k: Any, v: Any, kpm: Any, n_heads: int, scale: float) -> Any:
        attrs = {"num_heads_i": n_heads, "scale_f": scale}
        if kpm is None or kpm.node().mustBeNone():
            y = g.op(f"{DOMAIN}::{OP}", q, k, v, **attrs)
        else:
            bias = g.op("prim::Constant").setType(torch._C.OptionalType.ofTensor())  # omitted input
            y = g.op(f"{DOMAIN}::{OP}", q, k, v, bias, kpm, **attrs)
        return y.setType(q.type())  # typed: no "shape inference missing" notice


@torch.library.custom_op("mhsa::attention", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v, Tensor? kpm, int n_heads, float scale) -> Tensor")
def _attention(q, k, v, kpm, n_heads, scale):  # noqa: ANN001, ANN202 (the schema types it)
    return sdpa_packed(q, k, v, kpm, n_heads, scale).contiguous()


@_attention.register_fake
def _(q, k, v, kpm, n_heads, scale):  # noqa: ANN001, ANN202
    return torch.empty_like(q)  # (B, Q, H*S): the output has the query's shape


ATTENTION_CALLS: dict[str, Callable[..., torch.Tensor]] = {  # exporter -> (q, k, v, kpm, n_heads, scale) -> y
    "torchscript": _MHA.apply,
    "dynamo": torch.ops.mhsa.attention,
}


def _mha_op() -> Any:
    """``com.microsoft.MultiHeadAttention`` for onnxscript: the inputs and attributes used here
    (ONNX has no schema for contrib ops, and onnxscript needs one to call an op)."""
    import onnxscript
    from onnx.defs import OpSchema

    P, opt = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
    schema = OpSchema(
        OP, DOMAIN, 1,
        inputs=[P("query", "T"), P("key", "T", param_option=opt), P("value", "T", param_option=opt),
                P("bias", "T", param_option=opt), P("key_padding_mask", "M", param_option=opt)],
        outputs=[P("output", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "", required=True),
                    OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "", required=False)])
    return onnxscript.values.Op(onnxscript.values.Opset(DOMAIN, 1), OP, schema)


def translation_table() -> dict[Any, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``."""
    from onnxscript import opset18 as op

    mha = _mha_op()

    def attention_onnx(q: Any, k: Any, v: Any, kpm: Any, n_heads: int, scale: float) -> Any:
        if kpm is None:
            return mha(q, k, v, num_heads=n_heads, scale=scale)
        return mha(q, k, v, None, kpm, num_heads=n_heads, scale=scale)

    def gelu_onnx(x: Any, approximate: str = "none") -> Any:
        def c(value: float) -> Any:
            return op.CastLike(value, x)

        if approximate == "tanh":  # 0.5 * (x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))))
            inner = op.Mul(c(math.sqrt(2 / math.pi)), op.Add(x, op.Mul(c(0.044715), op.Mul(x, op.Mul(x, x)))))
            return op.Mul(c(0.5), op.Mul(x, op.Add(c(1.0), op.Tanh(inner))))
        return op.Mul(op.Mul(x, op.Add(op.Erf(op.Div(x, c(math.sqrt(2)))), c(1.0))), c(0.5))

    return {torch.ops.mhsa.attention.default: attention_onnx, torch.ops.aten.gelu.default: gelu_onnx}
