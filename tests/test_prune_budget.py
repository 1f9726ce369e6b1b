"""prune/budget.py, prune/latency.py, prune/kd.py: the FLOPs budget rule against hand-computed
counts, the latency bisection with an injected (deterministic) timer, KD fine-tuning's loss."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from mhsa_cli.checkpoint import load_checkpoint, load_model
from mhsa_cli.config import PruneConfig, build_config
from mhsa_cli.config.pruning import BUDGET_RUNTIMES
from mhsa_cli.errors import MhsaError
from mhsa_cli.model import ModelConfig, attention_flops
from mhsa_cli.prune.budget import Shape, check_budget, greedy_plan, priorities, rank_quantiles
from mhsa_cli.prune.kd import KDTeacher, frozen_teacher, hidden_pairs, prune_loss_fn
from mhsa_cli.prune.latency import MEASURES, bisect_fraction
from mhsa_cli.prune.layers import drop_layers
from mhsa_cli.train import LoopConfig

from .test_prune_structured import deep, masked_logits, prune_api, random_model, task_x, tokens  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

# T=4 positions, d=4, head_dim 2, mean pooling (every block computes 4 rows), no pooler, 2 classes:
# a head = 2 * (2*T*d*hd [k, v] + 2*T*d*hd [q, o] + 2*T*T*hd [scores, probs@v]) = 2 * (64 + 64 + 64) = 384,
# a neuron = 2 * 2*T*d = 64, a block (2 heads, 3 neurons) = 768 + 192 = 960, classifier 2 * d*C = 16.
TINY = ModelConfig("tokens", 4, 2, vocab_size=9, d_model=4, heads=[2, 2], head_dim=2, d_ff=3, pooling="mean")
TINY_FLOPS = 16 + 2 * 960
# scores -> rank quantiles q = (rank + 1) / (n + 1); every unit of a kind costs the same, so priority = q:
# heads (0,0) 1/5, (1,1) 2/5, (1,0) 3/5, (0,1) 4/5; neurons (0,1) 1/7, (0,2) 2/7, (1,2) 3/7, ...;
# blocks 1: 1/3, 0: 2/3
SCORES = {"head": [0.1, 0.9, 0.5, 0.3], "neuron": [0.6, 0.1, 0.2, 0.5, 0.4, 0.3], "layer": [2.0, 1.0]}


# ---------------------------------------------------------------- the FLOPs rule

@pytest.mark.parametrize("pooling, kind", [("mean", "tokens"), ("cls", "tokens"), ("first", "features")])
def test_budget_counts_flops_as_the_counter_does(pooling, kind):
    c = ModelConfig(kind, 7, 3, vocab_size=9, feature_dim=5, d_model=8, heads=[2, 0, 3], head_dim=4,
                    d_ff=[6, 2, 0], pooling=pooling, pooler="tanh")
    assert attention_flops(TINY) == TINY_FLOPS
    assert Shape.of(c).flops() == attention_flops(c) and Shape.of(c, 3).flops() == attention_flops(c, 3)


def test_rank_quantiles_and_priorities_by_hand():
    assert rank_quantiles([0.5, 0.1, 0.9, 0.1]) == [0.6, 0.2, 0.8, 0.4]  # ties: lower position first
    units = priorities(TINY, SCORES)
    got = [(u.kind, u.layer, u.index, round(u.priority, 4), u.saves) for u in units[:5]]
    assert got == [("neuron", 0, 1, round(1 / 7, 4), 64), ("head", 0, 0, 0.2, 384), ("neuron", 0, 2, round(2 / 7, 4), 64),
                   ("layer", 1, 1, round(1 / 3, 4), 960), ("head", 1, 1, 0.4, 384)]


def test_budget_met_exactly_per_the_flop_counter():
    units = priorities(TINY, SCORES)
    plan = greedy_plan(TINY, units, 0.75 * TINY_FLOPS)  # 1452: -64 -384 -64 = 1424 <= 1452 < 1488
    assert (plan.layers, plan.heads, plan.neurons, plan.flops) == ([], {0: [0]}, {0: [1, 2]}, 1424)
    pruned = ModelConfig("tokens", 4, 2, vocab_size=9, d_model=4, heads=[1, 2], head_dim=2, d_ff=[1, 3],
                         pooling="mean")
    assert attention_flops(pruned) == plan.flops
    # 1161.6: block 1 (-960 -> 464) would overshoot, so it is passed over; head (1, 1) -> 1040
    plan = greedy_plan(TINY, units, 0.6 * TINY_FLOPS)
    assert (plan.layers, plan.heads, plan.neurons, plan.flops) == ([], {0: [0], 1: [1]}, {0: [1, 2]}, 1040)
    assert attention_flops(dataclass_replace(pruned, heads=[1, 1])) == 1040


def test_a_passed_over_block_goes_when_nothing_finer_meets_the_budget():
    # every head must stay: all 6 neurons go (1936 - 384 = 1552 > 871.2), then block 1: 16 + 768 = 784
    plan = greedy_plan(TINY, priorities(TINY, SCORES), 0.45 * TINY_FLOPS, min_heads=2)
    assert (plan.layers, plan.heads, plan.neurons, plan.flops) == ([1], {}, {0: [0, 1, 2]}, 784)
    assert [u.kind for u in plan.order][-1] == "layer"


def test_greedy_order_follows_importance_per_flop():
    c = dataclass_replace(TINY, pooling="cls")  # the last block computes 1 query row: its units are cheaper
    units = priorities(c, SCORES)
    assert [u.priority for u in units] == sorted(u.priority for u in units)
    neurons = [u for u in units if u.kind == "neuron"]
    mean = sum(u.saves for u in neurons) / len(neurons)
    last = next(u for u in neurons if u.layer == 1 and u.index == 2)  # q = 3/7, costs 2 * 2 * 1 * 4 = 16
    assert last.saves == 16 and last.priority == pytest.approx(3 / 7 * mean / 16)
    plan = greedy_plan(c, units, 0.0, min_heads=1)  # everything allowed goes: one block, one head each
    kinds = [u.kind for u in plan.order]
    assert kinds.count("layer") == 1 and all(u.priority <= v.priority for u, v in zip(plan.order, plan.order[1:]))


def dataclass_replace(c, **kw):
    import dataclasses

    return dataclasses.replace(c, **kw)


def test_budget_seq_len_changes_what_is_counted():
    units = priorities(TINY, SCORES, seq_len=2)  # T = 2: a head = 2 * (32 + 32 + 16) = 160, a neuron 32
    assert {(u.kind, u.saves) for u in units if u.kind != "layer"} == {("head", 160), ("neuron", 32)}
    # 848 in all, target 636: -32 (816), -160 (656), -32 (624), as at T = 4 but other numbers
    plan = greedy_plan(TINY, units, 0.75 * attention_flops(TINY, 2), seq_len=2)
    assert attention_flops(TINY, 2) == 848 and plan.flops == 624
    assert plan.flops == Shape(TINY, 2, [1, 2], [1, 3], [True, True]).flops()


def test_unreachable_budget_is_refused_before_any_work():
    floor = 16 + 0  # one block with no heads and no neurons adds nothing: classifier alone
    with pytest.raises(MhsaError, match="below what pruning can reach"):
        check_budget(floor / TINY_FLOPS, TINY, None, 0, "--target-flops")
    check_budget(floor / TINY_FLOPS + 1e-3, TINY, None, 0, "--target-flops")
    with pytest.raises(MhsaError, match="below what pruning can reach"):  # a head must stay: + 384
        check_budget((floor + 384) / TINY_FLOPS, TINY, None, 1, "--target-flops")


# ---------------------------------------------------------------- latency bisection

@pytest.mark.parametrize("latency", [lambda f: f, lambda f: 0.35 + 0.65 * f, lambda f: f ** 0.5])
def test_bisection_lands_within_ten_percent(latency):
    f, rounds = bisect_fraction(0.5, 0.01, lambda f: (f, latency(f)), 8)
    assert abs(latency(f) / 0.5 - 1) <= 0.1 and len(rounds) <= 8
    assert rounds[0]["flops_target"] == 0.5  # starts at latency ~ FLOPs


def test_measures_are_the_config_choices():
    assert tuple(MEASURES) == BUDGET_RUNTIMES


@pytest.mark.parametrize("runtime", BUDGET_RUNTIMES)
def test_real_measures_return_a_ratio(runtime, tmp_path):
    model = random_model()
    smaller = drop_layers(model, [0, 1])
    cfg = build_config(PruneConfig, {"checkpoint": "x", "target_latency": 0.5, "budget_time": 0.02,
                                     "budget_runtime": runtime})
    ratio = MEASURES[runtime](cfg, model, tmp_path)(smaller)
    assert 0 < ratio < 10 and model.config.n_layers == 3  # the original is left as it was


# ---------------------------------------------------------------- mhsa prune with a budget

def test_target_flops_prunes_to_the_budget_and_records_it(deep, tmp_path):
    r = prune_api(deep, tmp_path / "b", target_flops=0.5, iterative=2)
    doc = json.loads((tmp_path / "b" / "pruning.json").read_text())
    full, after = attention_flops(load_checkpoint(deep).model_config), attention_flops(load_checkpoint(tmp_path / "b").model_config)
    b = doc["budget"]
    assert after <= 0.5 * full and b["flops_ratio"] == pytest.approx(after / full) and b["target_flops"] == 0.5
    assert [s["budget"]["target_ratio"] for s in doc["steps"]] == pytest.approx([0.75, 0.5])
    assert all(s["budget"]["flops_ratio"] <= s["budget"]["target_ratio"] for s in doc["steps"])
    assert b["lost"]["heads"]["removed"] == 12 - sum(r.heads_after) and "importance per FLOP" in b["rule"]
    assert b["lost"]["neurons"]["removed"] == 192 - sum(r.d_ff_after)
    assert b["lost"]["layers"]["removed"] == len(r.layers_dropped) and doc["plan"]["budget"] == "target_flops"
    x = task_x(deep)
    assert torch.allclose(load_model(tmp_path / "b").eval()(x), masked_logits(load_model(deep), doc, x), atol=1e-4)


@pytest.mark.parametrize("latency, asked", [(lambda r: r, 0.5), (lambda r: 0.4 + 0.6 * r, 0.7)])
def test_target_latency_bisects_with_an_injected_timer(deep, tmp_path, monkeypatch, latency, asked):
    seen = []

    def fake(cfg, original, tmp):
        full = attention_flops(original.config)
        seen.append(cfg.budget_runtime)
        return lambda cand: latency(attention_flops(cand.config) / full)

    monkeypatch.setitem(MEASURES, "torch", fake)
    prune_api(deep, tmp_path / "l", target_latency=asked, method=["magnitude"], layer_method="random")
    lat = json.loads((tmp_path / "l" / "pruning.json").read_text())["budget"]["latency"]
    assert seen == ["torch"] and abs(lat["measured_ratio"] / asked - 1) <= 0.1
    assert lat["measured_ratio"] == pytest.approx(latency(lat["predicted_ratio"]))
    assert 1 <= len(lat["rounds"]) <= 5 and lat["threads"] == 1 and lat["batch"] == 1


def test_cli_reports_the_budget_with_predicted_and_measured_latency(deep, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    monkeypatch.setitem(MEASURES, "onnxruntime-int8", lambda cfg, original, tmp: lambda cand: 0.61)
    out = tmp_path / "c"
    result = CliRunner().invoke(app, ["prune", str(deep), "--target-latency", "0.6", "--budget-runtime",
                                      "onnxruntime-int8", "--budget-rounds", "2", "--method", "magnitude",
                                      "--layer-method", "random", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = re.sub(r"[\s│]+", " ", result.output)  # rich draws boxes
    assert "Budget (greedy by importance per FLOP)" in text and "latency measured 0.610× (onnxruntime-int8" in text
    lat = json.loads((out / "pruning.json").read_text())["budget"]["latency"]
    assert len(lat["rounds"]) == 1 and lat["measured_ratio"] == 0.61  # within 2 %: the search stops


BAD = [
    (["--target-flops", "0.0001"], "below what pruning can reach"),
    (["--target-flops", "1"], "target_flops"),
    (["--target-flops", "0.5", "--ratio", "0.5"], "drop --ratio"),
    (["--target-flops", "0.5", "--ffn-ratio", "0.5"], "drop --ffn-ratio"),
    (["--target-latency", "0.5", "--drop-layers", "1"], "drop --drop-layers"),
    (["--target-flops", "0.5", "--target-latency", "0.5"], "not both"),
    (["--target-flops", "0.5", "--budget-seq-len", "5000"], "max_len"),
    (["--target-latency", "0.5", "--budget-runtime", "ort"], "unknown value 'ort'"),
    (["--kd-weight", "0.5"], "--finetune-epochs"),
    (["--kd-weight", "1.5", "--finetune-epochs", "1"], "kd_weight"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_budget_and_kd_values_one_line_exit_2_nothing_written(deep, tmp_path, args, message):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    from .conftest import assert_one_line_error

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prune", str(deep), "--out", str(out), *args])
    assert_one_line_error(result, message)
    assert not out.exists()


# ---------------------------------------------------------------- KD fine-tuning

def kd_cfg(**kw):
    return build_config(PruneConfig, {"checkpoint": "x", "finetune_epochs": 1, **kw})


def test_kd_loss_is_the_hand_computed_ce_kl_mix():
    teacher = frozen_teacher(random_model())
    student = drop_layers(random_model(), [1]).eval()
    x, y = tokens(), torch.tensor([0, 1, 2, 0, 1, 2])
    kd = KDTeacher(teacher, {1: 1, 2: 2, 3: 3}, "the unpruned input model")
    loss, logits = prune_loss_fn(kd_cfg(kd_weight=0.3, kd_temperature=3.0), kd, [0, 2], LoopConfig())(student, x, y)
    with torch.no_grad():
        s, t = student(x), teacher(x)
        p_t = torch.softmax(t / 3, -1)
        kl = (p_t * (p_t.log() - torch.log_softmax(s / 3, -1))).sum(-1).mean()
        expected = 0.7 * F.cross_entropy(s, y) + 0.3 * 9 * kl  # T^2 = 9
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and torch.allclose(logits, s, atol=1e-5)


def test_kd_hidden_states_pair_kept_blocks_with_their_original_index():
    teacher = frozen_teacher(random_model())
    student = drop_layers(random_model(seed=3), [1]).eval()
    assert hidden_pairs([0, 2]) == [(1, 1), (2, 3)]
    x, y = tokens(), torch.tensor([0, 1, 2, 0, 1, 2])
    kd = KDTeacher(teacher, {1: 1, 2: 2, 3: 3}, "the unpruned input model")
    fn = prune_loss_fn(kd_cfg(kd_weight=0.0, kd_hidden_weight=0.5), kd, [0, 2], LoopConfig())
    loss, _ = fn(student, x, y)
    with torch.no_grad():
        s, t = student.forward_features(x), teacher.forward_features(x)
        real = s.pad_mask.float()  # (B, 1 + T): the cls token is real
        mse = [((s.hidden_states[i] - t.hidden_states[j]).pow(2).mean(-1) * real).sum() / real.sum()
               for i, j in ((1, 1), (2, 3))]
        expected = F.cross_entropy(s.logits, y) + 0.5 * (mse[0] + mse[1]) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def spy_fit(monkeypatch, then=None) -> list:
    """The loss function of every fine-tuning prune starts (None: fit's own cross-entropy); each call
    then goes on to the real fit, or to ``then(loss_fn)`` (e.g. raise to stop there)."""
    import mhsa_cli.prune.command as command

    calls, real_fit = [], command.fit

    def spy(model, data, loop, device, loss_fn=None, **kw):
        calls.append(loss_fn)
        return then(loss_fn) if then else real_fit(model, data, loop, device, loss_fn=loss_fn, **kw)

    monkeypatch.setattr(command, "fit", spy)
    return calls


def test_kd_fine_tuning_uses_the_unpruned_input_as_a_frozen_teacher(deep, tmp_path, monkeypatch):
    calls = spy_fit(monkeypatch)
    prune_api(deep, tmp_path / "kd", ratio=0.5, drop_layers_at=[1], finetune_epochs=1, kd_weight=0.5,
              kd_hidden_weight=0.1, iterative=2)
    prune_api(deep, tmp_path / "ce", ratio=0.5, finetune_epochs=1)
    assert len(calls) == 3 and calls[2] is None  # without --kd-weight: fit's own cross-entropy
    unpruned = load_model(deep).state_dict()
    for fn in calls[:2]:
        assert not fn.teacher.training and not any(p.requires_grad for p in fn.teacher.parameters())
        assert all(torch.equal(v, unpruned[k]) for k, v in fn.teacher.state_dict().items())
        assert fn.pairs == [(1, 1), (2, 3)]  # block 1 dropped at step 1: kept blocks keep their indices
    kd = json.loads((tmp_path / "kd" / "pruning.json").read_text())["plan"]["kd"]
    assert kd["alpha"] == 0.5 and kd["hidden_weight"] == 0.1 and kd["teacher"] == "the unpruned input model"


def test_recipe_keys_are_the_cli_fields():
    c = build_config(PruneConfig, {"checkpoint": "x", "target_latency": 0.4, "budget_runtime": "onnxruntime-int8",
                                   "budget_threads": 1, "budget_batch": 32, "budget_seq_len": 16,
                                   "budget_rounds": 3, "budget_time": 0.1})
    assert (c.budget, c.ratio, c.budget_runtime, c.budget_batch) == ("target_latency", None, "onnxruntime-int8", 32)
    c = build_config(PruneConfig, {"checkpoint": "x", "finetune_epochs": 1, "kd_weight": 0.5, "kd_temperature": 4,
                                   "kd_hidden_weight": 0.1})
    assert (c.kd_weight, c.kd_temperature, c.kd_hidden_weight, c.ratio) == (0.5, 4.0, 0.1, 0.5)
    with pytest.raises(MhsaError, match="target_flops"):
        build_config(PruneConfig, {"checkpoint": "x", "target_flop": 0.5})
    with pytest.raises(MhsaError, match="drop --heads"):
        build_config(PruneConfig, {"checkpoint": "x", "target_flops": 0.5, "heads": 2})
