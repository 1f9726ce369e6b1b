"""Tests for ``mhsa_cli.prune`` (head importance, selection, physical removal, the
``mhsa prune`` command and its sweep) and ``mhsa_cli.report.prune``."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from typer.testing import CliRunner

from mhsa_cli import prune as P
from mhsa_cli.checkpoint import load_checkpoint, load_model
from mhsa_cli.cli import app
from mhsa_cli.config import PruneConfig, TrainConfig, build_config
from mhsa_cli.errors import MhsaError
from mhsa_cli.model import Attention, attention_flops, count_parameters
from mhsa_cli.prune import command as prune_command
from mhsa_cli.prune import surgery
from mhsa_cli.report.prune import heatmap_png, heatmap_table, render_prune
from mhsa_cli.tasks import Split, task_from_spec
from mhsa_cli.train import train

from .conftest import SMALL_MODEL, assert_one_line_error, make_int8

TASK = {"n_train": 400, "n_val": 200, "n_test": 200}
pytestmark = pytest.mark.usefixtures("one_thread")
S = 16  # head_dim of the default 64-wide, 4-head model


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def baseline(tmp_path_factory, one_thread) -> Path:
    """A tiny trained checkpoint: 2 layers x 4 heads, 64 wide, on a small ``order`` task."""
    out = tmp_path_factory.mktemp("prune") / "baseline"
    train(build_config(TrainConfig, {"out": str(out), "epochs": 2, "task_options": TASK, "device": "cpu",
                                     **SMALL_MODEL}))
    return out


@pytest.fixture(scope="module")
def data(baseline):
    return task_from_spec(load_checkpoint(baseline).task_spec)


@pytest.fixture()
def model(baseline):
    return load_model(baseline)


def cfg(baseline: Path, out: Path, **kw) -> PruneConfig:
    return build_config(PruneConfig, {"checkpoint": str(baseline), "out": str(out), "device": "cpu", **kw})


def explicit_magnitude(attn: Attention) -> torch.Tensor:
    """L2 norm of each head's q/k/v output rows and o input columns, written out by hand."""
    rows = lambda h: slice(h * S, (h + 1) * S)  # noqa: E731
    return torch.stack([sum((getattr(attn, n).weight[rows(h)] ** 2).sum() for n in "qkv")
                        + (attn.o.weight[:, rows(h)] ** 2).sum() for h in range(attn.n_heads)]).sqrt()


# ---------------------------------------------------------------- removal
REMOVALS = [
    {0: [1], 1: []},
    {0: [0, 2], 1: [3]},
    {0: [0, 1, 2, 3], 1: [2]},  # layer 0 pruned to zero heads
    {0: [0, 1, 2, 3], 1: [0, 1, 2, 3]},  # every head
]


@pytest.mark.parametrize("removed", REMOVALS)
def test_pruned_logits_equal_gated_logits(model, data, removed):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = P.remove_heads(model, removed)
    x = data.val.x[:128]
    with torch.inference_mode():
        gated = model.forward_features(x, head_gates=P.gates_for(model.heads, removed)).logits
        assert (pruned(x) - gated).abs().max() <= 1e-5
        assert (pruned.forward_features(x).logits - gated).abs().max() <= 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched


def test_head_counts_and_shapes_after_pruning(model):
    pruned = P.remove_heads(model, {0: [0, 1, 2, 3], 1: [1]})
    assert pruned.heads == pruned.config.heads == [0, 3]
    assert model.config.heads == [4, 4]
    zero, three = pruned.blocks[0].attn, pruned.blocks[1].attn
    assert zero.n_heads == 0 and not hasattr(zero, "q") and not hasattr(zero, "o")
    assert torch.equal(zero.o_bias, model.blocks[0].attn.o.bias)
    for name in "qkv":
        assert getattr(three, name).weight.shape == (3 * S, 64)
        assert getattr(three, name).bias.shape == (3 * S,)
    assert three.o.weight.shape == (64, 3 * S)
    keep = torch.cat([torch.arange(h * S, (h + 1) * S) for h in (0, 2, 3)])
    assert torch.equal(three.q.weight, model.blocks[1].attn.q.weight[keep])
    assert torch.equal(three.o.weight, model.blocks[1].attn.o.weight[:, keep])
    per_head = 4 * (64 * S) + 3 * S  # q/k/v rows + biases, o columns
    assert count_parameters(model) - count_parameters(pruned) == 5 * per_head  # layer 0's o.bias lives on as o_bias
    assert attention_flops(pruned.config) < attention_flops(model.config)
    P.check_structure(pruned)


def test_remove_heads_rejects_bad_indices(model):
    for bad in ({2: [0]}, {0: [4]}, {0: [1, 1]}, {1: [-1]}):
        with pytest.raises(MhsaError):
            P.remove_heads(model, bad)


def test_remove_heads_raises_if_pruned_model_differs(model, monkeypatch):
    real = surgery._slice_attention

    def broken(attn, keep):
        new = real(attn, keep)
        with torch.no_grad():
            new.v.weight[0].add_(1e-2)  # one value row off by a little
        return new

    monkeypatch.setattr(surgery, "_slice_attention", broken)
    with pytest.raises(RuntimeError, match="logit gap"):
        P.remove_heads(model, {0: [1]})


def test_check_structure_catches_stale_head_counts(model):
    stale = copy.deepcopy(model)
    stale.config = dataclasses.replace(stale.config, heads=[3, 4])
    with pytest.raises(RuntimeError, match="out of sync"):
        P.check_structure(stale)


def test_slicing_equals_torch_pruning_dependency_graph(model):
    """Our direct slicing removes exactly what torch-pruning's dependency graph removes."""
    import torch_pruning as tp

    removed = {0: [0, 2], 1: [3]}
    ours = P.remove_heads(model, removed)
    theirs = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(theirs, example_inputs=P.probe_input(theirs, 2))
    for layer, heads in removed.items():
        attn = theirs.blocks[layer].attn
        idxs = [h * S + s for h in heads for s in range(S)]
        graph.get_pruning_group(attn.q, tp.prune_linear_out_channels, idxs=idxs).prune()
        attn.n_heads -= len(heads)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- importance
def test_importance_registry_drives_cli_choices():
    assert list(P.IMPORTANCE) == ["gradient", "taylor", "magnitude", "random"]
    with pytest.raises(MhsaError, match="choose from: gradient, taylor, magnitude, random"):
        build_config(PruneConfig, {"checkpoint": "x", "method": ["gradiant"]})


def test_magnitude_is_l2_norm_of_head_weights(model, data):
    scores = P.head_importance(model, data.val, "magnitude")
    for block, s in zip(model.blocks, scores):
        assert torch.allclose(s, explicit_magnitude(block.attn).detach(), rtol=1e-5)


def _scale_head(model, layer: int, head: int, factor: float):
    """A copy of ``model`` (float64) with head ``head``'s parameter group scaled by ``factor``:
    its q/k/v output rows and biases and its o input columns."""
    m = copy.deepcopy(model).double()
    a, rows = m.blocks[layer].attn, slice(head * S, (head + 1) * S)
    with torch.no_grad():
        for lin in (a.q, a.k, a.v):
            lin.weight[rows] *= factor
            lin.bias[rows] *= factor
        a.o.weight[:, rows] *= factor
    return m


def test_taylor_is_molchanovs_squared_group_sum_averaged_over_minibatches(model, data):
    """Molchanov et al. (2019): I_h = mean over minibatches of (sum over the head's group of g*w)^2.

    Oracle without autograd: sum of g*w over a group is the derivative of the loss along w on
    that group, d/de L(w * (1 + e) on the group) at e = 0, here by central finite differences.
    """
    scores = P.head_importance(model, data.val, "taylor", normalize=False, max_batches=3, batch_size=32)
    assert all(p.grad is None for p in model.parameters())  # gradients cleaned up
    layer, eps = 1, 1e-4
    derivs = []  # (batches, heads): sum of g*w per minibatch and head
    with torch.no_grad():
        for x, y in P.validation_batches(data.val, 32, 3):
            row = []
            for h in range(4):
                up = F.cross_entropy(_scale_head(model, layer, h, 1 + eps)(x), y)
                down = F.cross_entropy(_scale_head(model, layer, h, 1 - eps)(x), y)
                row.append(float(up - down) / (2 * eps))
            derivs.append(row)
    d = torch.tensor(derivs, dtype=torch.float64)  # (3, 4)
    expected = d.pow(2).mean(0)
    torch.testing.assert_close(scores[layer].double(), expected, rtol=2e-3, atol=1e-4 * float(expected.max()))
    # the square is per minibatch: the square of the averaged sum (full-data gradient) is another ranking
    assert not torch.allclose(expected, d.mean(0).pow(2), rtol=0.05)


def test_gradient_importance_is_abs_derivative_of_loss_wrt_gate(model, data):
    """Michel et al.'s I_h = mean over examples of |dL(x)/d gate_h|, by finite differences."""
    scores = P.head_importance(model, data.val, "gradient", normalize=False, max_batches=1)
    x, y = data.val.x[:64], data.val.y[:64]
    eps, layer, head = 1e-2, 1, 2
    with torch.no_grad():
        def losses(delta):  # (B,) per-example losses
            gates = [torch.ones(4), torch.ones(4)]
            gates[layer][head] += delta
            return F.cross_entropy(model.forward_features(x, head_gates=gates).logits, y,
                                   reduction="none").double()

        per_example = (losses(eps) - losses(-eps)) / (2 * eps)
        finite = float(per_example.abs().mean())
        of_mean = abs(float(per_example.mean()))  # the per-batch variant lets signs cancel
    assert scores[layer][head].item() == pytest.approx(finite, rel=5e-2, abs=1e-4)
    assert finite > of_mean * 1.5  # so this test tells the two apart
    assert all(p.grad is None for p in model.parameters())  # gates only, weights untouched


def test_normalize_flag_divides_each_layer_by_its_l2_norm(model, data):
    for method in ("gradient", "taylor"):
        raw = P.head_importance(model, data.val, method, normalize=False)
        norm = P.head_importance(model, data.val, method, normalize=True)
        assert all(abs(float(s.norm()) - 1) < 1e-5 for s in norm)
        assert all(torch.allclose(n, r / r.norm()) for n, r in zip(norm, raw))
    for method in ("magnitude", "random"):  # documented: normalize applies to gradient/taylor only
        assert all(torch.equal(a, b) for a, b in zip(P.head_importance(model, data.val, method, normalize=False),
                                                     P.head_importance(model, data.val, method, normalize=True)))


def test_importance_batches_and_batch_size_change_gradient_scores(model, data):
    full = P.head_importance(model, data.val, "gradient", normalize=False)
    one = P.head_importance(model, data.val, "gradient", normalize=False, max_batches=1)
    small = P.head_importance(model, data.val, "gradient", normalize=False, batch_size=16)
    small_one = P.head_importance(model, data.val, "gradient", normalize=False, batch_size=16, max_batches=1)
    assert not all(torch.allclose(a, b) for a, b in zip(full, one))
    # per-example scores: the batch size only changes memory use ...
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(full, small))
    # ... and, with --importance-batches, how many samples are scored
    assert not all(torch.allclose(a, b) for a, b in zip(one, small_one))


def test_random_importance_is_seeded(model, data):
    a, b, c = (P.head_importance(model, data.val, "random", seed=s) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_importance_on_zero_head_layer(model, data):
    pruned = P.remove_heads(model, {0: [0, 1, 2, 3], 1: [0]})
    for method in P.IMPORTANCE:
        scores = P.head_importance(pruned, data.val, method)
        assert [len(s) for s in scores] == [0, 3]


def test_importance_reads_only_the_validation_split(model, data):
    """TaskData in -> the val split is used; a garbage test split changes nothing."""
    garbage = Split(torch.randint(0, 16, data.test.x.shape), torch.randint(0, 6, data.test.y.shape))
    poisoned = dataclasses.replace(data, test=garbage)
    for method in P.NEEDS_DATA:
        a = P.head_importance(model, data, method)
        b = P.head_importance(model, poisoned, method)
        c = P.head_importance(model, data.val, method)
        assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c))


def test_prune_command_never_uses_test_split_for_importance(baseline, data, tmp_path, monkeypatch):
    """Same checkpoint, test split replaced by garbage: identical scores and heads removed."""
    garbage = Split(torch.randint(0, 16, data.test.x.shape), torch.randint(0, 6, data.test.y.shape))
    import mhsa_cli.prune.data as prune_data

    monkeypatch.setattr(prune_data, "task_or_reason", lambda spec: (dataclasses.replace(data, test=garbage), None))
    bad = P.prune(cfg(baseline, tmp_path / "bad", method=["taylor"], importance_batches=1))
    monkeypatch.setattr(prune_data, "task_or_reason", lambda spec: (data, None))
    good = P.prune(cfg(baseline, tmp_path / "good", method=["taylor"], importance_batches=1))
    assert bad.scores == good.scores and bad.removed == good.removed
    assert bad.before.test_acc != good.before.test_acc  # the garbage really was the test split


# ---------------------------------------------------------------- selection
SCORES = [torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.5, 0.6, 0.7, 0.8])]


def test_global_scope_ranks_across_layers():
    assert P.select_heads(SCORES, ratio=0.5) == {0: [0, 1, 2, 3], 1: []}
    assert P.select_heads(SCORES, n=5) == {0: [0, 1, 2, 3], 1: [0]}


def test_layer_scope_removes_same_fraction_per_layer():
    assert P.select_heads(SCORES, ratio=0.5, scope="layer") == {0: [0, 1], 1: [0, 1]}
    # odd count: the extra head goes where the next head scores lowest
    assert P.select_heads(SCORES, n=3, scope="layer") == {0: [0, 1], 1: [0]}
    uneven = [torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0.1, 0.2])]
    assert P.select_heads(uneven, ratio=0.5, scope="layer") == {0: [2, 3], 1: [0]}


def test_min_heads_per_layer_is_honoured():
    assert P.select_heads(SCORES, ratio=0.5, min_heads_per_layer=1) == {0: [0, 1, 2], 1: [0]}
    assert P.select_heads(SCORES, n=6, scope="layer", min_heads_per_layer=1) == {0: [0, 1, 2], 1: [0, 1, 2]}


def test_ratio_is_floored_and_heads_overrides_ratio():
    assert sum(map(len, P.select_heads(SCORES, ratio=0.99).values())) == 7  # never all heads
    assert sum(map(len, P.select_heads(SCORES, ratio=0.9, n=2).values())) == 2
    assert P.select_heads(SCORES, ratio=0.0) == {0: [], 1: []}


@pytest.mark.parametrize("kw, message", [
    (dict(ratio=1.0), r"\[0, 1\)"),
    (dict(ratio=-0.1), r"\[0, 1\)"),
    (dict(n=9), "has 8 heads"),
    (dict(ratio=0.5, min_heads_per_layer=5), "larger than layer 0's 4 heads"),
    (dict(n=7, min_heads_per_layer=1), "only 6 of 8"),
    (dict(ratio=0.5, scope="diagonal"), "unknown scope"),
])
def test_select_heads_bad_input(kw, message):
    with pytest.raises(MhsaError, match=message):
        P.select_heads(SCORES, **kw)


def test_each_method_removes_its_own_lowest_heads(model, data):
    picks = {}
    for method in P.IMPORTANCE:
        scores = P.head_importance(model, data.val, method)
        chosen = P.select_heads(scores, ratio=0.5)
        flat = sorted((float(s[h]), layer, h) for layer, s in enumerate(scores) for h in range(len(s)))
        assert sorted((l, h) for _, l, h in flat[:4]) == sorted((l, h) for l, hs in chosen.items() for h in hs)
        picks[method] = chosen
    assert len({json.dumps(p) for p in picks.values()}) > 1


# ---------------------------------------------------------------- the command
def test_prune_saves_a_reloadable_checkpoint(baseline, data, tmp_path):
    r = P.prune(cfg(baseline, tmp_path / "p", heads=5, scope="global"))
    assert sum(r.heads_after) == 3 and r.heads_before == [4, 4]
    ckpt = load_checkpoint(tmp_path / "p")
    assert ckpt.kind == "float" and ckpt.model_config.heads == r.heads_after
    assert ckpt.meta["lineage"][-1]["operation"] == "prune"
    assert ckpt.meta["lineage"][-1]["parent"] == str(baseline)
    reloaded = load_model(ckpt)
    assert count_parameters(reloaded) == r.params_after < r.params_before
    assert ckpt.meta["metrics"]["flops"] == attention_flops(reloaded.config) == r.flops_after
    doc = json.loads((tmp_path / "p" / "head_importance.json").read_text())
    assert doc["split"] == "val" and [len(s) for s in doc["scores"]] == [4, 4]
    assert sum(map(len, doc["removed"])) == 5 and doc["heads_after"] == r.heads_after
    # the pruned checkpoint equals the gated original on real data
    original = load_model(baseline)
    gates = P.gates_for([4, 4], dict(enumerate(r.removed)))
    with torch.inference_mode():
        gap = (reloaded(data.test.x) - original.forward_features(data.test.x, head_gates=gates).logits).abs().max()
    assert gap <= 1e-5
    assert r.pruned.test_acc == pytest.approx(ckpt.meta["metrics"]["test_acc"])


def test_prune_a_pruned_checkpoint_with_a_zero_head_layer(baseline, tmp_path):
    first = P.prune(cfg(baseline, tmp_path / "a", heads=4, method=["magnitude"], scope="global"))
    zero_layer = build_config(PruneConfig, {"checkpoint": str(tmp_path / "a"), "out": str(tmp_path / "b"),
                                            "heads": sum(first.heads_after) - 1, "method": ["gradient"]})
    second = P.prune(zero_layer)
    assert sum(second.heads_after) == 1
    assert load_model(tmp_path / "b").heads == second.heads_after


def test_scope_and_min_heads_flags(baseline, tmp_path):
    layer = P.prune(cfg(baseline, tmp_path / "l", ratio=0.5, scope="layer", method=["random"]))
    assert layer.heads_after == [2, 2]
    floor = P.prune(cfg(baseline, tmp_path / "m", heads=6, min_heads_per_layer=1))
    assert floor.heads_after == [1, 1]


def test_seed_changes_random_pruning(baseline, tmp_path):
    a = P.prune(cfg(baseline, tmp_path / "a", method=["random"], seed=0))
    b = P.prune(cfg(baseline, tmp_path / "b", method=["random"], seed=3))
    assert a.removed != b.removed


def test_finetune_and_iterative(baseline, tmp_path):
    one = P.prune(cfg(baseline, tmp_path / "one", ratio=0.5, finetune_epochs=1))
    assert one.finetuned is not None and len(one.steps) == 1
    assert len(one.steps[0]["finetune_history"]) == 1
    two = P.prune(cfg(baseline, tmp_path / "two", ratio=0.5, iterative=2, finetune_epochs=1))
    assert [sum(map(len, s["removed"])) for s in two.steps] == [2, 2]
    assert [len(s) for s in two.steps[1]["scores"]] == two.steps[0]["heads"]  # re-scored after step 1
    assert sum(two.heads_after) == 4
    doc = json.loads((tmp_path / "two" / "head_importance.json").read_text())
    assert len(doc["steps"]) == 2
    no_ft = P.prune(cfg(baseline, tmp_path / "none", ratio=0.5, iterative=2))
    assert no_ft.finetuned is None and "finetune_history" not in no_ft.steps[0]
    assert len(no_ft.steps) == 2  # without fine-tuning, steps still re-score the smaller model


def test_threads_flag(baseline, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(prune_command, "set_threads", seen.append)
    P.prune(cfg(baseline, tmp_path / "t", method=["magnitude"], threads=3))
    assert seen == [3]


def test_finetune_settings_reach_the_training_loop(baseline, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(prune_command, "fit", lambda model, data, loop, *a, **k: seen.append(loop) or
                        type("F", (), {"best_epoch": 1, "seconds": 0.0, "history": []})())
    P.prune(cfg(baseline, tmp_path / "f", finetune_epochs=3, iterative=2, lr=5e-4, warmup=0.2,
                weight_decay=0.1, batch_size=32, seed=7))
    assert len(seen) == 2
    assert (seen[0].epochs, seen[0].lr, seen[0].warmup, seen[0].weight_decay, seen[0].batch_size,
            seen[0].seed) == (3, 5e-4, 0.2, 0.1, 32, 7)


def test_force_and_existing_output(baseline, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "keep.txt").write_text("x")
    with pytest.raises(MhsaError, match="--force"):
        P.prune(cfg(baseline, tmp_path / "p"))
    P.prune(cfg(baseline, tmp_path / "p", force=True))
    assert not (tmp_path / "p" / "keep.txt").exists()


def test_sweep_writes_table_files(baseline, tmp_path):
    r = P.prune(cfg(baseline, tmp_path / "s", sweep=[0.0, 0.5], method=["gradient", "random"], random_seeds=2))
    assert isinstance(r, P.SweepResult) and len(r.cells) == 4
    cell = {(c["ratio"], c["method"]): c for c in r.cells}
    assert cell[(0.0, "gradient")]["test_acc_mean"] == r.baseline.test_acc
    assert len(cell[(0.5, "random")]["seeds"]) == 2 and cell[(0.5, "gradient")]["seeds"] == [0]
    assert cell[(0.5, "random")]["heads_removed"] == 4
    rows = list(csv.DictReader((tmp_path / "s" / "sweep.csv").open()))
    assert len(rows) == 4 and rows[0]["method"] == "gradient"
    doc = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert doc["ratios"] == [0.0, 0.5] and doc["finetuned"] is False
    pytest.importorskip("matplotlib")
    assert (tmp_path / "s" / "sweep.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- report
def test_render_single_and_sweep(baseline, tmp_path):
    console = Console(record=True, width=160)
    render_prune(P.prune(cfg(baseline, tmp_path / "p", ratio=0.5, finetune_epochs=1)), console)
    text = console.export_text()
    for words in ("Head importance", "✗", "Per layer (original numbering)", "heads after", "d_ff", "FLOPs",
                  "feed-forward neurons", "after fine-tuning", "test Δ"):
        assert words in text
    render_prune(P.prune(cfg(baseline, tmp_path / "s", sweep=[0.25], method=["magnitude", "random"])), console)
    assert "±" in console.export_text()


def test_heatmap_marks_removed_heads():
    console = Console(record=True, width=120)
    console.print(heatmap_table([[0.1, 0.9], []], [[0], []], "t"))
    text = console.export_text()
    assert "✗ 0.1" in text and "0/0" in text and "1/2" in text
    pytest.importorskip("matplotlib")
    assert heatmap_png([[0.1, 0.9], [0.5]], [[0], []], "t")[:4] == b"\x89PNG"


# ---------------------------------------------------------------- CLI
@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """`--debug` in an earlier CLI test leaves tracebacks on for the session; not here."""
    import mhsa_cli.cli as cli

    monkeypatch.setitem(cli.DEBUG, "on", False)


@pytest.fixture(scope="module")
def int8_checkpoint(baseline, tmp_path_factory) -> Path:
    """A checkpoint folder that says it is int8 (what ``mhsa quantize`` writes)."""
    return make_int8(baseline, tmp_path_factory.mktemp("int8") / "int8")


BAD = [
    (["--ratio", "1.0"], "ratio"),
    (["--ratio", "-0.2"], "ratio"),
    (["--heads", "9"], "has 8 heads"),
    (["--method", "magic"], "unknown value 'magic'"),
    (["--min-heads-per-layer", "5"], "larger than layer 0's 4 heads"),
    (["--heads", "7", "--min-heads-per-layer", "1"], "only 6 of 8"),
    (["--method", "gradient,random"], "need --sweep"),
    (["--sweep", "0,0.5", "--finetune-epochs", "1"], "--sweep"),
    (["--sweep", "0,1.5"], "sweep"),
    (["--scope", "row"], "unknown value 'row'"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "no CUDA GPU")])


@pytest.mark.parametrize("args, message", BAD)
def test_cli_bad_input_one_line_exit_2_nothing_written(baseline, tmp_path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prune", str(baseline), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()


def test_cli_refuses_int8_checkpoint(int8_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prune", str(int8_checkpoint), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: cannot prune {int8_checkpoint}: it is an int8 checkpoint; prune before quantizing"
    assert not out.exists()


def test_cli_prunes(baseline, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prune", str(baseline), "--heads", "3", "--scope", "layer",
                                      "--no-normalize", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Head importance" in result.output
    doc = json.loads((out / "head_importance.json").read_text())
    assert doc["normalize"] is False and doc["scope"] == "layer"
    assert sorted(load_checkpoint(out).model_config.heads) == [2, 3]


# ---------------------------------------------------------------- from the checkpoint alone, --data
def without_data(src: Path, dst: Path, labels: list[str], tokenizer=None) -> Path:
    """A copy of checkpoint ``src`` whose task holds no data (as `mhsa import FOLDER` without --data writes it)."""
    import shutil

    from mhsa_cli.tasks.hf_text import data_spec

    shutil.copytree(src, dst)
    meta = json.loads((dst / "checkpoint.json").read_text())
    meta["task"] = data_spec(tokenizer, 0, labels, meta["model"]["max_len"])
    (dst / "checkpoint.json").write_text(json.dumps(meta))
    return dst


def prune_cli(*args):
    return CliRunner().invoke(app, ["prune", *map(str, args), "--device", "cpu"])


def test_magnitude_and_random_prune_a_checkpoint_without_data(baseline, data, tmp_path):
    src = without_data(baseline, tmp_path / "src", data.labels)
    r = prune_cli(src, "--method", "magnitude", "--heads", 3, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert "accuracy: not measured (no data)" in r.output
    original, pruned = load_model(src), load_checkpoint(tmp_path / "m")
    hand = [explicit_magnitude(b.attn).detach() for b in original.blocks]  # the oracle: norms by hand
    lowest = sorted((float(s), l, h) for l, layer in enumerate(hand) for h, s in enumerate(layer))[:3]
    removed = json.loads((tmp_path / "m" / "head_importance.json").read_text())["removed"]
    assert sorted((l, h) for _, l, h in lowest) == sorted((l, h) for l, hs in enumerate(removed) for h in hs)
    assert pruned.meta["metrics"]["accuracy_not_measured"] == "no data" and "test_acc" not in pruned.meta["metrics"]
    assert pruned.task_spec == load_checkpoint(src).task_spec and sum(pruned.model_config.heads) == 5
    r = prune_cli(src, "--method", "random", "--ratio", 0.25, "--seed", 3, "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    scores = json.loads((tmp_path / "r" / "head_importance.json").read_text())["scores"]
    g = torch.Generator().manual_seed(3)  # the random method's scores, drawn here independently
    assert scores == [torch.rand(4, generator=g).tolist() for _ in range(2)]


def test_blocks_and_neurons_are_pruned_without_data_by_weights_and_seed(baseline, data, tmp_path):
    """Structured pruning from the checkpoint alone: a random block, magnitude heads and neurons."""
    src = without_data(baseline, tmp_path / "src", data.labels)
    r = prune_cli(src, "--method", "magnitude", "--ratio", 0.25, "--ffn-ratio", 0.5, "--drop-layers", 1,
                  "--layer-method", "random", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "accuracy: not measured (no data)" in flat and "Layer importance (no data;" in flat
    doc = json.loads((tmp_path / "m" / "pruning.json").read_text())
    assert doc["split"] is None and len(doc["after"]["layers"]) == 1 and len(doc["removed"]["layers"]) == 1
    kept = doc["after"]["layers"][0]
    assert len(doc["removed"]["neurons"][kept]) == doc["before"]["d_ff"][kept] // 2
    pruned = load_checkpoint(tmp_path / "m")
    assert pruned.meta["metrics"]["accuracy_not_measured"] == "no data" and len(pruned.model_config.heads) == 1


@pytest.mark.parametrize("args, needle", [
    (("--method", "gradient"), "--method gradient scores heads on validation data"),
    (("--method", "taylor"), "--method taylor scores heads"),
    (("--method", "magnitude", "--finetune-epochs", "1"), "--finetune-epochs fine-tunes"),
    (("--method", "magnitude", "--sweep", "0.5"), "--sweep measures test accuracy"),
    (("--method", "magnitude", "--drop-layers", "1"), "--layer-method loss scores blocks on validation data"),
    (("--method", "gradient", "--ratio", "0", "--ffn-ratio", "0.5"), "--method gradient scores heads"),
])
def test_what_needs_data_names_data_in_one_line(baseline, data, tmp_path, args, needle):
    src = without_data(baseline, tmp_path / "src", data.labels)
    r = prune_cli(src, *args, "--out", tmp_path / "out")
    assert_one_line_error(r, needle, "has no data", "pass --data FILE")
    assert not (tmp_path / "out").exists()


def test_task_opt_needs_data(baseline, tmp_path):
    assert_one_line_error(prune_cli(baseline, "--task-opt", "max_len=8", "--out", tmp_path / "o"),
                          "--task-opt needs --data")


def test_data_file_is_read_with_the_checkpoints_tokenizer(tmp_path):
    """A text checkpoint whose CSV is gone: magnitude prunes (accuracy noted as not measured), gradient
    asks for --data, and with --data it scores on that file tokenized by the stored tokenizer."""
    from mhsa_cli.tasks import hf_text, load_task

    from .test_export import random_ckpt
    from .test_tasks import write_rows

    rows = [(" ".join(["good" if i % 2 else "bad"] * (1 + i % 5) + [f"w{i % 7}"]), "pos" if i % 2 else "neg")
            for i in range(80)]
    text = load_task("text", 0, path=write_rows(tmp_path / "t.csv", rows), max_len=12)
    ckpt = random_ckpt(tmp_path / "c", text)
    (tmp_path / "t.csv").unlink()
    r = prune_cli(ckpt, "--method", "magnitude", "--heads", 1, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    why = load_checkpoint(tmp_path / "m").meta["metrics"]["accuracy_not_measured"]
    assert why.startswith("no data: data file") and "not found" in why
    assert_one_line_error(prune_cli(ckpt, "--out", tmp_path / "g"), "--method gradient", "not found", "--data FILE")
    new = write_rows(tmp_path / "new.csv", rows[::-1])
    r = prune_cli(ckpt, "--data", new, "--task-opt", "max_len=10", "--heads", 2, "--importance-batches", 1,
                  "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    ref = hf_text.build(0, text.spec["tokenizer"], 0, text.labels, path=new, max_len=10)  # the oracle's data
    assert ref.labels == text.labels and (ref.val.x[:, -1] == 0).any()
    want = P.head_importance(load_model(ckpt), ref, "gradient", batch_size=64, max_batches=1)
    got = json.loads((tmp_path / "g" / "head_importance.json").read_text())["scores"]
    assert all(torch.allclose(torch.tensor(g), w, rtol=1e-5, atol=1e-8) for g, w in zip(got, want))
    spec = load_checkpoint(tmp_path / "g").task_spec  # the pruned model is judged on that file from now on
    assert spec["path"] == new and spec["tokenizer"] == text.spec["tokenizer"] and spec["max_len"] == 10
    before = load_checkpoint(tmp_path / "g").meta["metrics"]["accuracy_before"]["test_acc"]
    from mhsa_cli.train import evaluate

    assert before == pytest.approx(evaluate(load_model(ckpt), ref.test, torch.device("cpu")))


def test_data_with_labels_the_model_lacks_is_refused(tmp_path):
    from mhsa_cli.tasks import load_task

    from .test_export import random_ckpt
    from .test_tasks import write_rows

    rows = [(f"good w{i % 7}" if i % 2 else f"bad w{i % 5}", "pos" if i % 2 else "neg") for i in range(60)]
    text = load_task("text", 0, path=write_rows(tmp_path / "t.csv", rows), max_len=8)
    ckpt = random_ckpt(tmp_path / "c", text)
    other = write_rows(tmp_path / "o.csv", [(t, "spam" if lab == "pos" else "ham") for t, lab in rows])
    assert_one_line_error(prune_cli(ckpt, "--data", other, "--out", tmp_path / "o"),
                          "has labels ham, spam where", "pruning keeps the classifier")
    assert not (tmp_path / "o").exists()
