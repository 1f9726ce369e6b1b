"""prune/neurons.py and prune/layers.py: per-layer d_ff, neuron and block removal against
independent oracles (weights of the removed parts zeroed in the original), float and ONNX."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mhsa_cli.checkpoint import load_checkpoint, load_model, make_meta, save_model
from mhsa_cli.errors import MhsaError
from mhsa_cli.model import ModelConfig, attention_flops, build_model
from mhsa_cli.prune import remove_heads
from mhsa_cli.prune.importance import validation_batches
from mhsa_cli.prune.layers import LAYER_IMPORTANCE, drop_layers, layer_importance, select_layers
from mhsa_cli.prune.neurons import NEURON_IMPORTANCE, check_ff_structure, neuron_importance, remove_neurons
from mhsa_cli.registry import IMPORTANCE
from mhsa_cli.tasks import load_task

from .conftest import TINY_TASK

pytestmark = pytest.mark.usefixtures("one_thread")


def random_model(norm: str = "pre", heads=(2, 2, 2), d_ff=24, seed=0, vocab=20, classes=3):
    """A 16-wide model with every parameter random (biases too), so no removal is free by accident."""
    c = ModelConfig("tokens", 12, classes, vocab_size=vocab, d_model=16, heads=list(heads), head_dim=8,
                    d_ff=d_ff, norm=norm)
    m = build_model(c, seed=seed)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m.eval()


def tokens(n=6, T=10, vocab=20, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, vocab, (n, T), generator=g)
    x[0, 5:] = 0  # some padding
    return x


def zero_neurons(model, removed: dict[int, list[int]]):
    """Oracle: the original with the removed neurons' ff2 input columns zeroed (their output is gone)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for layer, idx in removed.items():
            m.blocks[layer].ff2.weight[:, idx] = 0.0
    return m


def zero_blocks(model, layers: list[int]):
    """Oracle for a pre-LN model: a block whose o and ff2 weights and biases are 0 is the identity."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for i in layers:
            for lin in (m.blocks[i].attn.o, m.blocks[i].ff2):
                lin.weight.zero_()
                lin.bias.zero_()
    return m


# ---------------------------------------------------------------- config

def test_d_ff_is_an_int_or_a_per_layer_list():
    c = ModelConfig("tokens", 8, 2, vocab_size=5, heads=[2, 2, 1], d_ff=[8, 8, 8])
    assert c.d_ff == 8 and c.ff_sizes == [8, 8, 8]  # canonical: equal widths are one int
    c = ModelConfig("tokens", 8, 2, vocab_size=5, heads=[2, 2], d_ff=[8, 0])
    assert c.validate().ff_sizes == [8, 0] and ModelConfig.from_dict(c.to_dict()) == c
    old = {**c.to_dict(), "d_ff": 32}  # a checkpoint from before per-layer widths
    assert ModelConfig.from_dict(old).ff_sizes == [32, 32]
    with pytest.raises(MhsaError, match="2 entries for 3 layers"):
        ModelConfig("tokens", 8, 2, vocab_size=5, heads=[1, 1, 1], d_ff=[4, 5]).validate()
    with pytest.raises(MhsaError, match="d_ff must be >= 0"):
        ModelConfig("tokens", 8, 2, vocab_size=5, heads=[1, 1], d_ff=[4, -1]).validate()


def test_flops_count_each_layers_width():
    c = ModelConfig("features", 4, 2, feature_dim=3, d_model=8, heads=[0, 0], head_dim=4, d_ff=[5, 0],
                    pooling="mean")
    # embed 4*3*8, ff of layer 0: 2 * 4 rows * 8 * 5, layer 1 none, classifier 8*2; all x2
    assert attention_flops(c) == 2 * (4 * 3 * 8 + 2 * 4 * 8 * 5 + 8 * 2)


# ---------------------------------------------------------------- neurons: surgery

@pytest.mark.parametrize("norm", ["pre", "post"])
def test_removed_neurons_equal_zeroed_neurons_incl_an_empty_layer(norm):
    model = random_model(norm)
    removed = {0: list(range(24)), 1: [0, 3, 7, 23], 2: []}
    pruned = remove_neurons(model, removed)
    assert pruned.ff_sizes == [0, 20, 24] and pruned.config.d_ff == [0, 20, 24]
    assert not hasattr(pruned.blocks[0], "ff1") and pruned.blocks[1].ff1.weight.shape == (20, 16)
    x = tokens()
    with torch.inference_mode():
        ref = zero_neurons(model, removed)(x)
        assert torch.allclose(pruned(x), ref, atol=1e-5)
        assert not torch.allclose(model(x), ref, atol=1e-3)  # the removal did change the model
    check_ff_structure(pruned)


def test_a_zero_neuron_layer_adds_only_ff2_bias():
    model = random_model(heads=(2,))
    pruned = remove_neurons(model, {0: list(range(24))})
    h = torch.randn(3, 5, 16)
    assert torch.equal(pruned.blocks[0]._ff(h), model.blocks[0].ff2.bias.expand(3, 5, 16))
    assert set(dict(pruned.blocks[0].named_parameters())) >= {"ff_bias"}


def test_remove_neurons_rejects_bad_indices_and_keeps_the_original():
    model = random_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(MhsaError, match="bad neuron indices"):
        remove_neurons(model, {0: [24]})
    with pytest.raises(MhsaError, match="layer 5 does not exist"):
        remove_neurons(model, {5: [0]})
    remove_neurons(model, {0: [1]})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_remove_neurons_raises_if_the_result_differs(monkeypatch):
    from mhsa_cli.prune import neurons

    real = neurons._slice_ff

    def wrong(block, keep):  # keeps the wrong neurons
        real(block, [i + 1 for i in keep[:-1]] + [0])
    monkeypatch.setattr(neurons, "_slice_ff", wrong)
    with pytest.raises(RuntimeError, match="neuron-gated"):
        remove_neurons(random_model(), {1: [3]})


# ---------------------------------------------------------------- neurons: importance

@pytest.fixture(scope="module")
def order():
    return load_task("order", 0, **TINY_TASK)


def order_model(order, d_ff=12, seed=0):
    c = ModelConfig("tokens", order.max_len, order.num_classes, vocab_size=order.vocab_size, d_model=16,
                    heads=[2, 2], head_dim=8, d_ff=d_ff)
    m = build_model(c, seed=seed)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def test_neuron_registry_has_the_head_methods():
    assert sorted(NEURON_IMPORTANCE) == sorted(IMPORTANCE)
    assert sorted(LAYER_IMPORTANCE) == ["loss", "random"]


def test_neuron_magnitude_is_l2_norm_of_row_and_column():
    model = random_model()
    scores = neuron_importance(model, load_task("order", 0, **TINY_TASK).val, "magnitude")
    b = model.blocks[1]
    i = 5
    expected = torch.sqrt(b.ff1.weight[i].pow(2).sum() + b.ff2.weight[:, i].pow(2).sum()).detach()
    assert scores[1][i] == pytest.approx(float(expected), rel=1e-6)


def test_neuron_gradient_is_mean_abs_per_example_derivative(order):
    model = order_model(order)
    batches = validation_batches(order.val, 16, 2)
    scores = neuron_importance(model, order.val, "gradient", batch_size=16, max_batches=2)
    # oracle: one example at a time, d loss / d (scalar gate on neuron 3 of layer 1)
    total, n = 0.0, 0
    for x, y in batches:
        for j in range(x.shape[0]):
            g = torch.ones(12, requires_grad=True)
            gates = [torch.ones(12), g]
            loss = F.cross_entropy(model.forward_features(x[j:j + 1], ff_gates=gates).logits, y[j:j + 1])
            total += abs(float(torch.autograd.grad(loss, g)[0][3]))
            n += 1
    assert float(scores[1][3]) == pytest.approx(total / n, rel=1e-4)


def test_neuron_taylor_is_squared_group_sum_averaged_over_minibatches(order):
    model = order_model(order)
    batches = validation_batches(order.val, 16, 2)
    scores = neuron_importance(model, order.val, "taylor", batch_size=16, max_batches=2)
    b, i, total = model.blocks[0], 7, 0.0
    for x, y in batches:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        s = ((b.ff1.weight.grad[i] * b.ff1.weight[i]).sum() + b.ff1.bias.grad[i] * b.ff1.bias[i]
             + (b.ff2.weight.grad[:, i] * b.ff2.weight[:, i]).sum())
        total += float(s) ** 2
    assert float(scores[0][i]) == pytest.approx(total / 2, rel=1e-4)


def test_neuron_random_is_seeded_and_zero_layers_score_empty(order):
    model = remove_neurons(order_model(order), {0: list(range(12))})
    a, b = (neuron_importance(model, order.val, "random", seed=s) for s in (3, 3))
    assert a[0].numel() == 0 and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], neuron_importance(model, order.val, "random", seed=4)[1])
    for method in ("gradient", "taylor", "magnitude"):
        s = neuron_importance(model, order.val, method, max_batches=1)
        assert s[0].numel() == 0 and s[1].shape == (12,) and (s[1] >= 0).all()


# ---------------------------------------------------------------- layers

def test_dropped_blocks_equal_identity_blocks():
    model = random_model("pre", heads=(2, 1, 2, 2))
    pruned = drop_layers(model, [1, 3])
    assert pruned.config.heads == [2, 2] and len(pruned.blocks) == 2
    x = tokens()
    with torch.inference_mode():
        assert torch.allclose(pruned(x), zero_blocks(model, [1, 3])(x), atol=1e-5)
        assert not torch.allclose(pruned(x), model(x), atol=1e-3)


def test_drop_layers_keeps_per_layer_lists_and_post_ln():
    model = remove_neurons(remove_heads(random_model("post"), {1: [0, 1]}), {1: list(range(24)), 2: [0]})
    pruned = drop_layers(model, [0])  # the post-LN skip: the oracle is forward_features(skip_layers)
    assert pruned.config.heads == [0, 2] and pruned.config.d_ff == [0, 23]
    with torch.inference_mode():
        x = tokens()
        assert torch.allclose(pruned(x), model.forward_features(x, skip_layers={0}).logits, atol=1e-5)


@pytest.mark.parametrize("layers, message", [([0, 1, 2], "at least one must stay"), ([3], "bad layer indices"),
                                             ([1, 1], "bad layer indices")])
def test_drop_layers_bad_input(layers, message):
    with pytest.raises(MhsaError, match=message):
        drop_layers(random_model(), layers)


def test_layer_loss_importance_is_the_loss_increase_when_skipped(order):
    model = order_model(order)
    scores = layer_importance(model, order.val, "loss", batch_size=50)
    x, y = order.val.x, order.val.y
    with torch.inference_mode():
        base = F.cross_entropy(model(x), y)
        for i in range(2):
            skipped = F.cross_entropy(zero_blocks(model, [i]).eval()(x), y)
            assert float(scores[i]) == pytest.approx(float(skipped - base), abs=1e-5)
    assert select_layers(scores, 1) == [int(scores.argmin())]
    assert select_layers(torch.tensor([0.3, 0.1, 0.1]), 2) == [1, 2]
    with pytest.raises(MhsaError, match="at least one must stay"):
        select_layers(scores, 2)
