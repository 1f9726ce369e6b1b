"""Where heads are removed: physical head removal and its checks.

:func:`remove_heads` deletes the weights of the chosen heads (q/k/v output rows,
output projection input columns), updates ``model.config.heads``, checks the
shapes (:func:`check_structure`) and proves with a forward pass on a probe batch
(:func:`probe_input`) that the pruned model equals the original with those heads
gated to zero (:func:`gates_for`, :func:`max_logit_gap`, within
:data:`TOLERANCE`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from ..errors import MhsaError
from ..model import Attention, MHSAClassifier
from ..model.probe import probe_input

TOLERANCE = 1e-5  # max |logit difference| / max(1, max |logit|) in float32 on the CPU
ROUNDING_STEPS = 16  # elsewhere: this many units of the arithmetic's epsilon, relative to the logits

# --------------------------------------------------------------------------- removal

def _slice_attention(attn: Attention, keep: list[int]) -> Attention:
    """A new Attention holding only heads ``keep`` (all-removed: just the output bias)."""
    d_model, S, o = attn.o.out_features, attn.head_dim, attn.o
    new = Attention(d_model, len(keep), S, attn.dropout).to(o.weight.device, o.weight.dtype)
    with torch.no_grad():
        if not keep:
            new.o_bias.copy_(o.bias)  # gated-to-zero heads leave exactly o.bias
            return new
        rows = torch.cat([torch.arange(h * S, (h + 1) * S) for h in keep]).to(o.weight.device)  # (H'*S,)
        for name in ("q", "k", "v"):
            old, lin = getattr(attn, name), getattr(new, name)
            lin.weight.copy_(old.weight[rows])  # (H'*S, D)
            lin.bias.copy_(old.bias[rows])
        new.o.weight.copy_(o.weight[:, rows])  # (D, H'*S)
        new.o.bias.copy_(o.bias)
    return new


def check_structure(model: MHSAClassifier) -> None:
    """Check that ``config.heads`` matches every layer's modules and weight shapes.

    Raises:
        RuntimeError: a stale head count or a mis-shaped projection.
    """
    c = model.config
    if model.heads != c.heads:
        raise RuntimeError(f"head counts out of sync: modules {model.heads}, config {c.heads}")
    for layer, block in enumerate(model.blocks):
        a, inner = block.attn, block.attn.n_heads * c.head_dim
        expected = {"q": (inner, c.d_model), "k": (inner, c.d_model), "v": (inner, c.d_model),
                    "o": (c.d_model, inner)} if a.n_heads else {}
        for name, shape in expected.items():
            if tuple(getattr(a, name).weight.shape) != shape:
                raise RuntimeError(f"layer {layer}: {name}.weight is {tuple(getattr(a, name).weight.shape)}, "
                                   f"expected {shape}")
        if not a.n_heads and tuple(a.o_bias.shape) != (c.d_model,):
            raise RuntimeError(f"layer {layer}: o_bias has shape {tuple(a.o_bias.shape)}")


def gates_for(heads: list[int], removed: dict[int, list[int]], device: Any = "cpu") -> list[torch.Tensor]:
    """Head gates (one ``(H_l,)`` tensor per layer): 0 for removed heads, 1 otherwise."""
    gates = [torch.ones(h, device=device) for h in heads]
    for layer, idx in removed.items():
        gates[layer][list(idx)] = 0.0
    return gates


def max_logit_gap(original: MHSAClassifier, pruned: MHSAClassifier, removed: dict[int, list[int]],
                  x: torch.Tensor) -> float:
    """max |pruned(x) - original(x with removed heads gated to 0)| over logits (eval mode)."""
    return _gap_and_scale(original, pruned, removed, x)[0]


def _gap_and_scale(original: MHSAClassifier, pruned: MHSAClassifier, removed: dict[int, list[int]],
                   x: torch.Tensor) -> tuple[float, float]:
    """(max |logit gap|, max |reference logit|); shapes must match and logits be finite
    (:func:`mhsa_cli.runtimes.parity.logit_gap`)."""
    return masked_gap(original, pruned, x, "head-gated",
                      lambda: {"head_gates": gates_for(original.heads, removed, x.device)})


def masked_gap(original: MHSAClassifier, pruned: MHSAClassifier, x: torch.Tensor, what: str,
               reference: Any) -> tuple[float, float]:
    """(max |pruned(x) - masked original(x)|, max |masked logit|), both models in eval mode.

    Args:
        reference: a callable returning the keyword arguments of ``original.forward_features``
            that mask what was removed (``head_gates``, ``ff_gates``, ``skip_layers``).
        what: how the original is masked, for the error message ("neuron-gated").
    """
    from ..runtimes.parity import logit_gap

    modes = [(m, m.training) for m in (original, pruned)]
    for m, _ in modes:
        m.eval()
    try:
        with torch.inference_mode():
            ref = original.forward_features(x, **reference()).logits  # (B, C)
            gap = logit_gap(ref, pruned(x), f"pruned vs {what} original")
            scale = float(ref.abs().max()) if ref.numel() else 0.0
    finally:
        for m, was in modes:
            m.train(was)
    return gap, scale


def require_equal(original: MHSAClassifier, pruned: MHSAClassifier, what: str, reference: Any) -> None:
    """Raise unless ``pruned`` equals the masked ``original`` on a probe batch (see :func:`masked_gap`).

    Raises:
        RuntimeError: the logit gap exceeds :func:`gap_tolerance` (a surgery bug).
    """
    gap, scale = masked_gap(original, pruned, probe_input(original), what, reference)
    weight = next(original.parameters())
    tol = gap_tolerance(weight.dtype, weight.device, scale)
    if not gap <= tol:
        raise RuntimeError(f"removal changed the model: max |logit gap| {gap:.3g} > {tol:.3g} "
                           f"against the {what} original")


def gap_tolerance(dtype: torch.dtype, device: torch.device | str, scale: float = 1.0) -> float:
    """The largest logit gap that is rounding, not a surgery bug, for this arithmetic.

    The pruned model multiplies smaller matrices than the gated original, so its sums
    round differently. Float32 on the CPU: :data:`TOLERANCE`. On CUDA, float32 matmuls
    may run in TF32 (10-bit mantissa; ``torch.get_float32_matmul_precision()`` "high") or
    bf16 ("medium"), and half types round at their own epsilon: there the bound is
    :data:`ROUNDING_STEPS` epsilons. Both are relative to ``max(1, scale)``, the size of
    the logits.
    """
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    if torch.device(device).type == "cuda" and dtype == torch.float32:
        eps = {"high": 2.0 ** -10, "medium": 2.0 ** -7}.get(torch.get_float32_matmul_precision(), eps)
    return max(TOLERANCE, ROUNDING_STEPS * eps) * max(1.0, scale)


def _check_removal(model: MHSAClassifier, removed: dict[int, list[int]]) -> None:
    for layer, idx in removed.items():
        if not 0 <= layer < model.config.n_layers:
            raise MhsaError(f"layer {layer} does not exist (the model has {model.config.n_layers})")
        h = model.heads[layer]
        if len(set(idx)) != len(idx) or any(not 0 <= i < h for i in idx):
            raise MhsaError(f"layer {layer}: bad head indices {list(idx)} (it has {h} heads)")


def remove_heads(model: MHSAClassifier, heads_to_remove: dict[int, list[int]]) -> MHSAClassifier:
    """Physically remove heads; return a new model (``model`` is not modified).

    Deletes the q/k/v output rows (and biases) and the output-projection input
    columns of each removed head; a layer that loses every head becomes
    ``Attention(n_heads=0)`` carrying the old ``o.bias``. The new model's
    ``config.heads`` is updated, its shapes are checked, and a forward pass on
    a probe batch must match the original with the same heads gated to zero.

    Args:
        model: a float :class:`MHSAClassifier`.
        heads_to_remove: ``{layer: head indices}`` in the model's current numbering.

    Returns:
        The pruned model (same device and train/eval mode).

    Raises:
        MhsaError: a layer or head index that does not exist; NaN or Inf logits
            (a ParityError: no gap can be measured).
        RuntimeError: the pruned model's logits differ from the gated original's by
            more than :func:`gap_tolerance` allows, or its shapes disagree with its config.
    """
    _check_removal(model, heads_to_remove)
    pruned = copy.deepcopy(model)
    for layer, idx in heads_to_remove.items():
        if idx:
            gone = set(idx)
            keep = [h for h in range(model.heads[layer]) if h not in gone]
            pruned.blocks[layer].attn = _slice_attention(model.blocks[layer].attn, keep)
    pruned.config = dataclasses.replace(model.config, heads=pruned.heads).validate()
    check_structure(pruned)
    gap, scale = _gap_and_scale(model, pruned, heads_to_remove, probe_input(model))
    weight = next(model.parameters())
    tol = gap_tolerance(weight.dtype, weight.device, scale)
    if not gap <= tol:
        raise RuntimeError(f"head removal changed the model: max |logit gap| {gap:.3g} > {tol:.3g}")
    return pruned
