"""prune/neurons.py and prune/layers.py: per-layer d_ff, neuron and block removal against
independent oracles (weights of the removed parts zeroed in the original), float and ONNX."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

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
        total += float(s.detach()) ** 2
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


# ---------------------------------------------------------------- mhsa prune: the combined plan

@pytest.fixture(scope="module")
def deep(tmp_path_factory, one_thread) -> Path:
    """A trained 3-layer checkpoint: 4 heads x 8, d_ff 64 per layer, on a tiny ``order`` task."""
    from mhsa_cli.train import train

    from .conftest import tiny_train_config

    out = tmp_path_factory.mktemp("structured") / "deep"
    train(tiny_train_config(out, layers=3, epochs=1))
    return out


def masked_logits(original, doc: dict, x: torch.Tensor) -> torch.Tensor:
    """The original with what pruning.json says was removed masked: heads and neurons gated to 0,
    dropped blocks skipped (an oracle that reads only the stored plan)."""
    removed = doc["removed"]
    heads = [torch.ones(h) for h in doc["before"]["heads"]]
    ffs = [torch.ones(f) for f in doc["before"]["d_ff"]]
    for l in range(len(heads)):
        heads[l][removed["heads"][l]] = 0.0
        ffs[l][removed["neurons"][l]] = 0.0
    with torch.inference_mode():
        return original.eval().forward_features(x, head_gates=heads, ff_gates=ffs,
                                                skip_layers=set(removed["layers"])).logits


def test_one_prune_call_removes_blocks_heads_neurons_as_stored(deep, tmp_path):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    out = tmp_path / "p"
    result = CliRunner().invoke(app, ["prune", str(deep), "--ratio", "0.5", "--ffn-ratio", "0.5", "--drop-layers",
                                      "1", "--iterative", "2", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Layer importance" in result.output and "feed-forward neurons" in result.output
    doc = json.loads((out / "pruning.json").read_text())
    # hand-computed: step 1 drops 0 of 1 blocks, 3 of 12 heads, 16 of 64 neurons per layer; step 2 drops
    # 1 block, then heads to floor(0.5 * 8) = 4 removed from the 2 kept layers, neurons to 32 per layer
    assert [s["heads"] for s in doc["steps"]][0] != [4, 4, 4] and doc["steps"][0]["d_ff"] == [48, 48, 48]
    assert sum(doc["steps"][0]["heads"]) == 9 and doc["steps"][0]["layers_dropped"] == []
    assert len(doc["removed"]["layers"]) == 1 and doc["after"]["d_ff"] == [32, 32]
    assert sum(doc["after"]["heads"]) == 4
    dropped = doc["removed"]["layers"][0]
    scores = doc["steps"][1]["layer_scores"]
    assert scores[dropped] == min(s for s in scores if s is not None)  # the least important block went
    ckpt = load_checkpoint(out)
    assert ckpt.model_config.d_ff == 32 and ckpt.model_config.heads == doc["after"]["heads"]
    assert ckpt.meta["metrics"]["layers_dropped"] == [dropped]
    x = task_x(deep)
    assert torch.allclose(load_model(out).eval()(x), masked_logits(load_model(deep), doc, x), atol=1e-4)


def task_x(ckpt: Path, n: int = 16) -> torch.Tensor:
    from mhsa_cli.tasks import task_from_spec

    return task_from_spec(load_checkpoint(ckpt).task_spec).test.x[:n]


def prune_api(deep: Path, out: Path, **kw):
    from mhsa_cli.config import PruneConfig, build_config
    from mhsa_cli.prune import prune

    return prune(build_config(PruneConfig, {"checkpoint": str(deep), "out": str(out), "device": "cpu", **kw}))


def test_explicit_layers_global_neurons_and_finetuning(deep, tmp_path):
    r = prune_api(deep, tmp_path / "a", ratio=0.0, ffn_ratio=0.75, ffn_scope="global", drop_layers_at=[0],
                  finetune_epochs=1, iterative=2)
    assert r.layers_dropped == [0] and r.layers_kept == [1, 2] and r.heads_after == [4, 4]
    assert sum(r.d_ff_after) == 128 - 96 and r.finetuned is not None
    layer = prune_api(deep, tmp_path / "b", ratio=0.0, ffn_ratio=0.75)  # layer scope: 16 left everywhere
    assert layer.d_ff_after == [16, 16, 16] and not layer.layers_dropped
    doc = json.loads((tmp_path / "a" / "pruning.json").read_text())
    assert doc["plan"]["layers"]["at"] == [0] and doc["removed"]["neurons"][0] == []
    assert doc["kept_neurons"][0] == [] and all(len(k) == f for k, f in zip(doc["kept_neurons"][1:], r.d_ff_after))


def test_layer_method_random_is_seeded(deep, tmp_path):
    picks = {tuple(prune_api(deep, tmp_path / f"r{s}", ratio=0.0, drop_layers=1, layer_method="random",
                             seed=s).layers_dropped) for s in range(4)}
    assert len(picks) > 1  # the seed changes which block goes


BAD = [
    (["--ffn-ratio", "1"], "ffn"),
    (["--ffn-ratio", "1.5"], "ffn"),
    (["--ffn-ratio", "-0.1"], "ffn"),
    (["--drop-layers", "3"], "at least one must stay"),
    (["--drop-layers", "-1"], "drop"),
    (["--drop-layers-at", "0,1,2"], "at least one must stay"),
    (["--drop-layers-at", "3"], "layers 0..2"),
    (["--drop-layers-at", "1,1"], "layers 0..2"),
    (["--drop-layers", "1", "--drop-layers-at", "1"], "not both"),
    (["--sweep", "0.5", "--ffn-ratio", "0.5"], "--sweep removes heads only"),
    (["--layer-method", "magic"], "unknown value 'magic'"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_structured_values_one_line_exit_2_nothing_written(deep, tmp_path, args, message):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    from .conftest import assert_one_line_error

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prune", str(deep), "--out", str(out), *args])
    assert_one_line_error(result, message)
    assert not out.exists()


# ---------------------------------------------------------------- downstream: int8, export, reload

@pytest.fixture(scope="module")
def hollow(deep, tmp_path_factory) -> tuple[Path, dict, Any]:
    """The deep model, weights randomised (parity on every parameter), with layer 0 left with 0 heads
    and 0 neurons, 10 neurons gone from layer 2 and block 1 dropped; saved as a prune checkpoint."""
    original = load_model(deep)
    with torch.no_grad():
        for p in original.parameters():
            p.normal_(0, 0.2)
    model = remove_heads(original, {0: [0, 1, 2, 3]})
    model = remove_neurons(model, {0: list(range(64)), 2: list(range(0, 20, 2))})
    model = drop_layers(model, [1])
    assert model.config.heads == [0, 4] and model.config.d_ff == [0, 54]
    ckpt = load_checkpoint(deep)
    out = tmp_path_factory.mktemp("hollow") / "pruned"
    save_model(out, model, make_meta("float", model.config, ckpt.task_spec, "prune", {}, {"test_acc": 0.0}))
    doc = {"before": {"heads": [4, 4, 4], "d_ff": [64, 64, 64]},
           "removed": {"heads": [[0, 1, 2, 3], [], []], "neurons": [list(range(64)), [], list(range(0, 20, 2))],
                       "layers": [1]}}
    return out, doc, original


def test_zero_head_zero_neuron_layer_reloads_and_exports_equal_to_masking(hollow, deep, tmp_path):
    from mhsa_cli.config import ExportConfig, build_config
    from mhsa_cli.export import INT8_OPS, export, op_counts

    path, doc, original = hollow
    x = task_x(deep, 9)[:, :11]  # 9 rows of 11 tokens: dynamic axes, neither traced
    ref = masked_logits(original, doc, x)
    assert torch.allclose(load_model(path).eval()(x), ref, atol=1e-5)  # float, after a reload
    r = export(build_config(ExportConfig, {"checkpoint": str(path), "out": str(tmp_path / "onnx"), "threads": 1}))
    assert r.meta["exporter"]["fused_attention_layers"] == 1  # one node for the layer with heads
    import onnxruntime as ort

    s = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(s.run(None, {"input": x.numpy()})[0] - ref.numpy()).max() <= 1e-4
    int8 = [f for p, f in r.files.items() if p == "int8"]
    assert int8 and all(op_counts(tmp_path / "onnx" / int8[0]["file"]).get(op) for op in INT8_OPS)


def test_torch_int8_of_a_structurally_pruned_model_reloads(hollow, deep, tmp_path):
    from .conftest import make_int8

    path, _, _ = hollow
    q = make_int8(path, tmp_path / "int8")
    ckpt = load_checkpoint(q)
    assert ckpt.meta["kind"] == "int8" and ckpt.model_config.d_ff == [0, 54]
    x = task_x(deep)
    with torch.inference_mode():
        a, b = load_model(q)(x), load_model(path).eval()(x)
    assert a.shape == b.shape and (a - b).abs().max() <= 0.1 * b.abs().max()  # int8 rounding, not a new model


def test_recipe_keys_are_the_cli_fields():
    from mhsa_cli.config import PruneConfig, build_config

    c = build_config(PruneConfig, {"checkpoint": "x", "ffn_ratio": 0.5, "ffn_scope": "global", "drop_layers": 1,
                                   "layer_method": "random"})
    assert (c.ffn_ratio, c.ffn_scope, c.drop_layers, c.layer_method) == (0.5, "global", 1, "random")
    assert build_config(PruneConfig, {"checkpoint": "x", "drop_layers_at": "2,4"}).drop_layers_at == [2, 4]
    with pytest.raises(MhsaError, match="ffn_ratio"):
        build_config(PruneConfig, {"checkpoint": "x", "ffn_ration": 0.5})
