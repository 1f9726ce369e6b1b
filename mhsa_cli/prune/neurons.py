"""Feed-forward neurons: their importance and their physical removal.

A neuron ``i`` of layer ``l`` is row ``i`` of ``ff1`` (weight and bias) and column
``i`` of ``ff2``. :func:`neuron_importance` scores every neuron on the
**validation** split with a criterion from :data:`NEURON_IMPORTANCE` (the same
names as the head criteria, the same definitions on a neuron's parameters):

* ``gradient`` -- E_x |dL(x)/d gate_i| of a gate on the neuron's activation
  (Michel et al. 2019's head criterion, per neuron; absolute value per example);
* ``taylor`` -- mean over minibatches of (sum of g*w over the neuron's parameters)^2
  (Molchanov et al. 2019, group contribution);
* ``magnitude`` -- L2 norm of the neuron's weights (its ``ff1`` row and ``ff2`` column);
* ``random`` -- the seeded control.

:func:`remove_neurons` reslices ``ff1`` / ``ff2``, updates ``config.d_ff`` and proves
with a forward pass that the result equals the original with those neurons'
activations gated to zero. A layer may keep no neuron: it keeps ``ff2``'s bias.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .. import registry
from ..errors import MhsaError, choice
from ..model import Block, MHSAClassifier
from ..tasks import Split, TaskData
from .importance import NEEDS_DATA, Batches, gate_gradient, normalize_per_layer, run_scorer
from .surgery import gates_for, require_equal

# --------------------------------------------------------------------------- importance


def _gradient(model: MHSAClassifier, batches: Batches, seed: int) -> list[torch.Tensor]:
    """I_i = E_x |dL(x)/d gate_i| at gate = 1, one gate row per example (no cancelling)."""
    return gate_gradient(model, batches, model.ff_sizes, "ff_gates")


def _group_dot(block: Block) -> torch.Tensor:
    """sum of g * w over each neuron's parameters -> (F,): ff1 row + bias, ff2 column
    (ff2's bias is shared by all neurons, so it is in no group)."""
    w1, b1, w2 = block.ff1.weight, block.ff1.bias, block.ff2.weight  # (F, D), (F,), (D, F)
    return ((w1.grad * w1).sum(1) + b1.grad * b1 + (w2.grad * w2).sum(0)).detach()


def _taylor(model: MHSAClassifier, batches: Batches, seed: int) -> list[torch.Tensor]:
    """Molchanov et al. (2019), eq. 4 per neuron: mean over minibatches of (sum g*w)^2."""
    total = [torch.zeros(f) for f in model.ff_sizes]
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            total = [t + _group_dot(b).pow(2).cpu() if t.numel() else t for t, b in zip(total, model.blocks)]
        return [t / max(len(batches), 1) for t in total]
    finally:
        model.zero_grad(set_to_none=True)


def _magnitude(model: MHSAClassifier, batches: Batches, seed: int) -> list[torch.Tensor]:
    """sqrt(|ff1 row i|^2 + |ff2 column i|^2) per neuron (no biases); needs no data."""
    out = []
    for b in model.blocks:
        if b.d_ff == 0:
            out.append(torch.zeros(0))
            continue
        sq = b.ff1.weight.pow(2).sum(1) + b.ff2.weight.pow(2).sum(0)  # (F,)
        out.append(sq.sqrt().detach().float().cpu())
    return out


def _random(model: MHSAClassifier, batches: Batches, seed: int) -> list[torch.Tensor]:
    """Uniform random scores from ``seed``: the control every criterion must beat."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(f, generator=gen) for f in model.ff_sizes]


NEURON_IMPORTANCE = registry.NEURON_IMPORTANCE
for _name, _fn in (("gradient", _gradient), ("taylor", _taylor), ("magnitude", _magnitude), ("random", _random)):
    NEURON_IMPORTANCE.register(_name, _fn)


def neuron_importance(model: MHSAClassifier, data: Split | TaskData | None, method: str, *, batch_size: int = 64,
                      max_batches: int = 0, normalize: bool = False, seed: int = 0) -> list[torch.Tensor]:
    """Score every feed-forward neuron of ``model``; higher = more important.

    Args:
        model: a float model (left unchanged, in its train/eval mode).
        data: the **validation** split, or a :class:`TaskData` whose ``val`` split is used
            (None for methods that need no data: magnitude, random).
        method: a key of :data:`NEURON_IMPORTANCE`.
        batch_size, max_batches: validation batches used (0 = all).
        normalize: L2-normalise each layer's scores (gradient and taylor only).
        seed: seed of the ``random`` method.

    Returns:
        One float tensor ``(F_l,)`` per layer, on CPU (empty for a 0-neuron layer).

    Raises:
        MhsaError: unknown method, no data for a method that needs it, or scores that are not finite.
    """
    fn = NEURON_IMPORTANCE[choice("importance method", method, NEURON_IMPORTANCE)]
    scores = run_scorer(fn, model, data, method, method in NEEDS_DATA, "neurons", batch_size, max_batches, seed)
    if any(not torch.isfinite(s).all() for s in scores):
        raise MhsaError(f"'{method}' neuron importance produced non-finite scores (diverged model?)")
    return normalize_per_layer(scores) if normalize and method in NEEDS_DATA else scores


# --------------------------------------------------------------------------- removal

def _slice_ff(block: Block, keep: list[int]) -> None:
    """Keep only neurons ``keep`` of ``block`` (in place); none kept: ff2's bias alone."""
    ff1, ff2 = block.ff1, block.ff2
    del block.ff1, block.ff2
    block.d_ff = len(keep)
    with torch.no_grad():
        if not keep:  # gated-to-zero neurons leave exactly ff2.bias
            block.ff_bias = nn.Parameter(ff2.bias.detach().clone())
            return
        idx = torch.tensor(keep, device=ff1.weight.device)  # (F',)
        block.ff1 = nn.Linear(ff1.in_features, len(keep)).to(ff1.weight.device, ff1.weight.dtype)
        block.ff2 = nn.Linear(len(keep), ff2.out_features).to(ff2.weight.device, ff2.weight.dtype)
        block.ff1.weight.copy_(ff1.weight[idx])  # (F', D)
        block.ff1.bias.copy_(ff1.bias[idx])
        block.ff2.weight.copy_(ff2.weight[:, idx])  # (D, F')
        block.ff2.bias.copy_(ff2.bias)


def check_ff_structure(model: MHSAClassifier) -> None:
    """Check that ``config.d_ff`` matches every layer's feed-forward weights.

    Raises:
        RuntimeError: a stale width or a mis-shaped ``ff1`` / ``ff2``.
    """
    c = model.config
    if model.ff_sizes != c.ff_sizes:
        raise RuntimeError(f"feed-forward widths out of sync: modules {model.ff_sizes}, config {c.ff_sizes}")
    for layer, b in enumerate(model.blocks):
        shapes = ((tuple(b.ff1.weight.shape), tuple(b.ff2.weight.shape)) if b.d_ff
                  else (tuple(b.ff_bias.shape),))
        expected = ((b.d_ff, c.d_model), (c.d_model, b.d_ff)) if b.d_ff else ((c.d_model,),)
        if shapes != expected:
            raise RuntimeError(f"layer {layer}: feed-forward shapes {shapes}, expected {expected}")


def _check_indices(model: MHSAClassifier, removed: dict[int, list[int]]) -> None:
    for layer, idx in removed.items():
        if not 0 <= layer < model.config.n_layers:
            raise MhsaError(f"layer {layer} does not exist (the model has {model.config.n_layers})")
        f = model.ff_sizes[layer]
        if len(set(idx)) != len(idx) or any(not 0 <= i < f for i in idx):
            raise MhsaError(f"layer {layer}: bad neuron indices (it has {f} neurons)")


def remove_neurons(model: MHSAClassifier, neurons_to_remove: dict[int, list[int]]) -> MHSAClassifier:
    """Physically remove feed-forward neurons; return a new model (``model`` is not modified).

    Args:
        model: a float :class:`MHSAClassifier`.
        neurons_to_remove: ``{layer: neuron indices}`` in the model's current numbering.

    Returns:
        The pruned model; its ``config.d_ff`` lists each layer's new width.

    Raises:
        MhsaError: a layer or neuron index that does not exist.
        RuntimeError: the pruned model differs from the original with those neurons'
            activations gated to zero (beyond rounding), or its shapes disagree with its config.
    """
    _check_indices(model, neurons_to_remove)
    pruned = copy.deepcopy(model)
    for layer, idx in neurons_to_remove.items():
        if idx:
            gone = set(idx)
            _slice_ff(pruned.blocks[layer], [i for i in range(model.ff_sizes[layer]) if i not in gone])
    pruned.config = dataclasses.replace(model.config, d_ff=pruned.ff_sizes).validate()
    check_ff_structure(pruned)
    require_equal(model, pruned, "neuron-gated",
                  lambda: {"ff_gates": gates_for(model.ff_sizes, neurons_to_remove, next(model.parameters()).device)})
    return pruned
