"""distill.py: the KD loss by hand (with T^2), a frozen teacher, student init,
every loss flag, a pruned teacher, the saved lineage and one-line CLI errors."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from typer.testing import CliRunner

from mhsa_cli.checkpoint import load_checkpoint, load_model, make_meta, save_model
from mhsa_cli.cli import app
from mhsa_cli.config import DistillConfig, build_config
from mhsa_cli.distill import (LossWeights, attention_kl, distill, hidden_mse, init_from_teacher, kd_loss,
                              layer_map, make_loss_fn, make_plan, make_projections, match_teacher_blocks,
                              student_config, train_student)
from mhsa_cli.model import build_model, count_parameters, make_config
from mhsa_cli.tasks import task_from_spec
from mhsa_cli.train import LoopConfig

from .conftest import TINY_TASK, make_int8


def dcfg(teacher="", **values):
    return build_config(DistillConfig, {"teacher": str(teacher), "device": "cpu", **values})


def order_config(layers=2, d_model=32, heads=4, d_ff=64):
    return make_config("tokens", 24, 6, 16, 0, layers, d_model, heads, d_ff, 0.0, "cls")


@pytest.fixture(scope="module")
def teacher(tiny_ckpt, tmp_path_factory):
    """The shared tiny trained teacher, re-saved with a smaller task spec (fast students)."""
    ckpt = load_checkpoint(tiny_ckpt)
    meta = {**ckpt.meta, "task": {**ckpt.task_spec, "n_train": 96, "n_val": 48, "n_test": 48}}
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    save_model(out, load_model(ckpt), meta)
    return out


def batch(n=8, seed=0):
    """A small `order` batch with padding."""
    data = task_from_spec({"name": "order", "seed": seed, **TINY_TASK})
    return data.train.x[:n], data.train.y[:n]


# ---------------------------------------------------------------- losses
def test_kd_loss_equals_hand_computed_value_with_t_squared():
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    alpha, T = 0.25, 2.0

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    ce = -math.log(softmax([1.0, 0.0])[0])
    p_t, p_s = softmax([0.0, 0.5]), softmax([0.5, 0.0])
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    expected = (1 - alpha) * ce + alpha * T ** 2 * kl
    assert kd_loss(s, t, y, alpha, T).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(s, t, y, 1.0, T).item() == pytest.approx(4.0 * kl, rel=1e-6)  # the T^2 factor
    assert kd_loss(s, t, y, 0.0, T).item() == pytest.approx(ce, rel=1e-6)


def test_attention_kl_head_averages_and_ignores_padded_rows():
    t = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    s = torch.softmax(torch.randn(2, 2, 5, 5), -1)  # different head count
    assert attention_kl(t, t, None).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_kl(s, t, None).item() > 0
    pad = torch.tensor([[True] * 5, [True, True, True, False, False]])
    s2 = s.clone()
    s2[1, :, 3:] = torch.softmax(torch.randn(2, 2, 5), -1)  # only padded query rows change
    assert attention_kl(s2, t, pad).item() == pytest.approx(attention_kl(s, t, pad).item())
    zeros = t.clone()
    zeros[..., 4] = 0.0  # a padded key: probability 0 must give a finite loss
    assert torch.isfinite(attention_kl(zeros, zeros, None))


def test_hidden_mse_masks_padding_and_maps_widths():
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    pad = torch.tensor([[True, True, False], [True, False, False]])
    s2 = s.clone()
    s2[0, 2] += 100.0  # a padded token
    assert hidden_mse(s2, t, pad).item() == pytest.approx(hidden_mse(s, t, pad).item())
    proj = torch.nn.Linear(4, 6)
    assert hidden_mse(s, torch.randn(2, 3, 6), pad, proj).shape == ()


def test_hidden_mse_equals_the_hand_formula():
    # B=1, T=3 (last token padding), D=2: mean over real tokens of the mean squared feature error
    s = torch.tensor([[[1.0, 2.0], [0.0, -1.0], [50.0, 50.0]]])
    t = torch.tensor([[[4.0, 2.0], [1.0, 1.0], [0.0, 0.0]]])
    pad = torch.tensor([[True, True, False]])
    token0 = ((1 - 4) ** 2 + (2 - 2) ** 2) / 2  # 4.5
    token1 = ((0 - 1) ** 2 + (-1 - 1) ** 2) / 2  # 2.5
    assert hidden_mse(s, t, pad).item() == pytest.approx((token0 + token1) / 2)  # 3.5; L1 would give 1.5
    everything = (token0 + token1 + (50 ** 2 + 50 ** 2) / 2) / 3
    assert hidden_mse(s, t, None).item() == pytest.approx(everything)
    proj = torch.nn.Linear(2, 1)  # width map: p(h) = 2*h0 - h1 + 1
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[2.0, -1.0]]))
        proj.bias.fill_(1.0)
    t1 = torch.tensor([[[0.0], [3.0], [0.0]]])  # mapped real tokens: 2*1-2+1 = 1, 2*0+1+1 = 2
    assert hidden_mse(s, t1, pad, proj).item() == pytest.approx(((1 - 0) ** 2 + (2 - 3) ** 2) / 2)


def test_attention_kl_equals_the_hand_formula_and_its_direction():
    # teacher: 2 heads, student: 1 head; T=2 tokens, the second is padding (its query row ignored)
    t = torch.tensor([[[[0.9, 0.1], [0.5, 0.5]], [[0.7, 0.3], [0.2, 0.8]]]])  # (1, 2, 2, 2)
    s = torch.tensor([[[[0.1, 0.9], [0.99, 0.01]]]])  # (1, 1, 2, 2)
    pad = torch.tensor([[True, False]])
    t_avg = [0.8, 0.2]  # head-averaged teacher row 0
    s_row = [0.1, 0.9]
    kl_ts = sum(p * math.log(p / q) for p, q in zip(t_avg, s_row))  # KL(teacher || student)
    kl_st = sum(q * math.log(q / p) for p, q in zip(t_avg, s_row))  # the reverse: must not match
    assert attention_kl(s, t, pad).item() == pytest.approx(kl_ts, rel=1e-5)
    assert abs(kl_ts - kl_st) > 0.2
    row1_t = [(0.5 + 0.2) / 2, (0.5 + 0.8) / 2]
    row1 = sum(p * math.log(p / q) for p, q in zip(row1_t, [0.99, 0.01]))
    assert attention_kl(s, t, None).item() == pytest.approx((kl_ts + row1) / 2, rel=1e-5)


def test_loss_fn_adds_each_term_with_its_weight_on_the_paired_layers():
    tcfg = order_config(layers=2, d_model=32)
    teacher = build_model(tcfg, seed=1).eval().requires_grad_(False)
    student = build_model(order_config(layers=1, d_model=16, heads=2, d_ff=32), seed=0)
    proj = make_projections(student.config, tcfg, 1)
    x, y = batch()
    w = LossWeights(alpha=0.3, temperature=3.0, hidden=0.7, attention=1.9)
    got = make_loss_fn(teacher, w, [(1, 2)], [(1, 2)], proj)(student, x, y)[0]
    with torch.no_grad():
        t = teacher(x, features=True, output_attentions=True)
    s = student(x, features=True, output_attentions=True)
    expected = (kd_loss(s.logits, t.logits, y, 0.3, 3.0)
                + 0.7 * hidden_mse(s.hidden_states[1], t.hidden_states[2], s.pad_mask, proj[0])
                + 1.9 * attention_kl(s.attentions[0], t.attentions[1], s.pad_mask))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- the teacher stays frozen
def test_teacher_gets_no_gradients_and_stays_in_eval_mode(teacher):
    ckpt = load_checkpoint(teacher)
    model = load_model(ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    data = task_from_spec(ckpt.task_spec)
    cfg = dcfg(teacher, hidden_weight=1.0, attn_weight=1.0, hidden_layers=["1:1", "1:2"])
    plan = make_plan(cfg, ckpt.model_config, count_parameters(model))
    student = build_model(plan.student, seed=0)
    model.train()  # train_student must put it back in eval mode
    train_student(student, model, data, LoopConfig(epochs=1), LossWeights(0.5, 2.0, 1.0, 1.0), plan)
    assert seen and all(mode == (False, False) for mode in seen)  # eval mode, no autograd
    assert not model.training and all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- student shape and init
def test_student_shapes_from_presets_and_options():
    t = order_config(layers=4, d_model=64, heads=4, d_ff=128)
    half = student_config(t, dcfg())  # default: half
    assert (half.n_layers, half.d_model, half.heads, half.head_dim, half.d_ff) == (2, 32, [2, 2], 16, 64)
    quarter = student_config(t, dcfg(shrink="quarter"))
    assert (quarter.n_layers, quarter.d_model, quarter.heads, quarter.d_ff) == (2, 16, [1, 1], 32)
    explicit = student_config(t, dcfg(layers=1, d_model=32))
    assert (explicit.n_layers, explicit.d_model, explicit.heads, explicit.d_ff) == (1, 32, [2], 128)
    distilbert = student_config(t, dcfg(init_from_teacher=True))
    assert (distilbert.n_layers, distilbert.d_model, distilbert.d_ff) == (2, 64, 128)


def test_init_from_teacher_copies_every_kth_layer():
    assert layer_map(2, 4) == [2, 4] and layer_map(3, 12) == [4, 8, 12] and layer_map(1, 2) == [2]
    tcfg = order_config(layers=4)
    tcfg.heads = [4, 3, 4, 2]  # a pruned teacher: the student takes the copied blocks' heads
    teacher = build_model(tcfg, seed=1)
    scfg, mapping = match_teacher_blocks(student_config(tcfg, dcfg(init_from_teacher=True)), tcfg, None)
    assert mapping == [2, 4] and scfg.heads == [3, 2]
    student = build_model(scfg, seed=2)
    init_from_teacher(student, teacher, mapping)
    s, t = student.state_dict(), teacher.state_dict()
    source = {"blocks.0.": "blocks.1.", "blocks.1.": "blocks.3."}  # 1-based map [2, 4]
    for key in s:
        prefix = key[:9]
        src = source[prefix] + key[9:] if prefix in source else key  # embeddings, ln_f, head as is
        assert torch.equal(s[key], t[src]), key
    with pytest.raises(Exception, match="needs the teacher's widths"):
        match_teacher_blocks(student_config(tcfg, dcfg(init_from_teacher=True, shrink="half")), tcfg, None)


def test_neuron_pruned_teacher_gives_students_its_widths():
    tcfg = order_config(layers=4)
    tcfg.heads, tcfg.d_ff = [4, 3, 4, 0], [64, 10, 40, 0]  # neurons pruned, block 4 empty
    scfg, mapping = match_teacher_blocks(student_config(tcfg, dcfg(init_from_teacher=True)), tcfg, None)
    assert mapping == [2, 4] and scfg.heads == [3, 0] and scfg.d_ff == [10, 0]
    student, teacher = build_model(scfg, seed=2), build_model(tcfg.validate(), seed=1)
    init_from_teacher(student, teacher, mapping)
    assert torch.equal(student.blocks[1].ff_bias, teacher.blocks[3].ff_bias)
    half = student_config(tcfg, dcfg(shrink="half"))  # a fresh student: half the widest layer
    assert half.d_ff == 32 and half.n_layers == 2


# ---------------------------------------------------------------- every loss flag matters
@pytest.mark.parametrize("change", [
    {"alpha": 0.9}, {"temperature": 4.0}, {"hidden_weight": 1.0}, {"attn_weight": 1.0},
    {"hidden_weight": 1.0, "hidden_layers": ["0:0"]},
])
def test_every_loss_flag_changes_the_loss(change):
    tcfg = order_config()
    teacher = build_model(tcfg, seed=1).eval().requires_grad_(False)
    x, y = batch()
    base_values = {"hidden_weight": 1.0} if "hidden_layers" in change else {}

    def loss(values):
        cfg = dcfg(**values)
        plan = make_plan(cfg, tcfg, count_parameters(teacher))
        student = build_model(plan.student, seed=0)
        w = LossWeights(cfg.alpha, cfg.temperature, cfg.hidden_weight, cfg.attn_weight)
        proj = make_projections(plan.student, tcfg, len(plan.hidden_pairs))
        return make_loss_fn(teacher, w, plan.hidden_pairs, plan.attn_pairs, proj)(student, x, y)[0].item()

    assert loss({**base_values, **change}) != pytest.approx(loss(base_values), rel=1e-6)


def test_mixup_kd_loss_mixes_inputs_for_both_and_labels_for_ce():
    from mhsa_cli.train import Mixup

    tcfg = make_config("features", 6, 4, 0, 3, 2, 32, 4, 64, 0.0, "cls")
    teacher = build_model(tcfg, seed=1).eval().requires_grad_(False)
    student = build_model(make_config("features", 6, 4, 0, 3, 1, 16, 2, 16, 0.0, "cls"), seed=0)
    x, y = torch.randn(8, 6, 3), torch.randint(0, 4, (8,))
    w = LossWeights(alpha=0.7, temperature=3.0)
    loss, logits = make_loss_fn(teacher, w, [], [], None, Mixup(1.0, seed=2))(student, x, y)
    xm, y2, lam = Mixup(1.0, seed=2)(x, y)  # the same draw
    s, t = student(xm), teacher(xm)
    expected = lam * kd_loss(s, t, y, 0.7, 3.0) + (1 - lam) * kd_loss(s, t, y2, 0.7, 3.0)
    assert torch.allclose(logits, s) and loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_distill_with_mixup_feeds_both_students_the_same_mixes(tmp_path, monkeypatch):
    from mhsa_cli import train as train_module
    from mhsa_cli.config import TrainConfig
    from mhsa_cli.train import Mixup, train

    train(build_config(TrainConfig, {"task": "digits", "epochs": 1, "d_model": 16, "heads": 2, "d_ff": 16,
                                     "out": str(tmp_path / "t"), "threads": 1}))
    seen = []
    real = train_module.cross_entropy_loss  # the scratch student's loss: fit's default
    monkeypatch.setattr(train_module, "cross_entropy_loss",
                        lambda ls, mixup, *more: seen.append(mixup) or real(ls, mixup, *more))
    values = {"epochs": 1, "compare_scratch": True, "threads": 1}
    mixed = distill(dcfg(str(tmp_path / "t"), out=str(tmp_path / "m"), mixup=1.0, **values))
    plain = distill(dcfg(str(tmp_path / "t"), out=str(tmp_path / "p"), **values))
    assert isinstance(seen[0], Mixup) and seen[0].strength == 1.0 and seen[1] is None  # scratch: same mixes
    a, b = load_model(tmp_path / "m").state_dict(), load_model(tmp_path / "p").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert "scratch_test_acc" in mixed.metrics and "scratch_test_acc" in plain.metrics
    assert load_checkpoint(tmp_path / "m").meta["lineage"][-1]["settings"]["losses"]["mixup"] == 1.0

    from rich.console import Console

    from mhsa_cli.report.distill import render_distill

    console = Console(record=True, width=200)
    render_distill(mixed, console)
    assert "on mixup inputs (a = 1" in console.export_text()


# ---------------------------------------------------------------- end to end
def test_distill_saves_student_with_lineage_and_scratch(teacher, tmp_path):
    out = tmp_path / "student"
    res = distill(dcfg(teacher, out=str(out), epochs=1, compare_scratch=True, hidden_weight=0.5,
                       attn_weight=0.5))
    meta = load_checkpoint(out).meta
    step = meta["lineage"][-1]
    assert step["operation"] == "distill" and step["parent"] == str(teacher)
    assert meta["lineage"][0]["operation"] == "train"
    assert step["settings"]["losses"] == {"ce": 0.5, "kd": 0.5, "temperature": 2.0,
                                          "hidden_mse": 0.5, "attention_kl": 0.5, "mixup": 0.0}
    assert step["settings"]["hidden_pairs"] == [[1, 2]] and step["settings"]["projections_saved"] is False
    m = meta["metrics"]
    assert m["params"] < m["teacher_params"] and 0 <= m["scratch_test_acc"] <= 1
    assert res.metrics["test_acc"] == m["test_acc"] and res.scratch_history
    assert load_model(out).config.heads == [2]


def test_default_budget_is_the_teachers_epochs(teacher, tmp_path):
    """Without --epochs the student trains as many epochs as the teacher did (recorded)."""
    res = distill(dcfg(teacher, out=str(tmp_path / "s")))
    trained = load_checkpoint(teacher).meta["lineage"][0]["settings"]["epochs"]
    assert len(res.history) == trained
    assert load_checkpoint(tmp_path / "s").meta["lineage"][-1]["settings"]["epochs"] == trained


def test_scratch_is_the_same_student_and_budget(teacher, tmp_path):
    """With alpha = 0 (plain CE) the distilled run must equal the scratch run exactly."""
    res = distill(dcfg(teacher, out=str(tmp_path / "s"), epochs=2, alpha=0.0, compare_scratch=True))
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in res.scratch_history]
    assert res.metrics["test_acc"] == res.metrics["scratch_test_acc"]


def test_pruned_teacher_and_zero_head_layers(teacher, tmp_path):
    ckpt = load_checkpoint(teacher)
    cfg = ckpt.model_config
    cfg.heads = [3, 0]  # as if pruned: layer 2 has no heads left
    pruned = tmp_path / "pruned"
    save_model(pruned, build_model(cfg, seed=0), make_meta("float", cfg, ckpt.task_spec, "prune", {}, {}, ckpt))
    res = distill(dcfg(pruned, out=str(tmp_path / "a"), epochs=1, attn_weight=1.0, hidden_layers=["1:1", "1:2"],
                       layers=1, d_model=16))
    assert res.plan["attention_pairs"] == [[1, 1]] and any("0 heads" in n for n in res.notes)
    with pytest.raises(Exception, match="no --hidden-layers pair has attention heads"):
        distill(dcfg(pruned, out=str(tmp_path / "b"), epochs=1, attn_weight=1.0, layers=1, d_model=16))
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def broken(tiny_ckpt, tmp_path_factory):
    """Teachers the CLI must refuse: corrupt JSON, corrupt weights, int8."""
    root = tmp_path_factory.mktemp("broken")
    for name in ("json", "weights"):
        shutil.copytree(tiny_ckpt, root / name)
    (root / "json" / "checkpoint.json").write_text("{not json")
    (root / "weights" / "model.safetensors").write_bytes(b"garbage")
    make_int8(tiny_ckpt, root / "int8")
    return root


BAD = [
    (["--teacher", "{missing}"], "not found"),
    (["--teacher", "{broken}/json"], "not valid JSON"),
    (["--teacher", "{broken}/weights"], "corrupt"),
    (["--teacher", "{broken}/int8"], "use the float teacher"),
    ([], "Missing option '--teacher'"),
    (["--teacher", "{teacher}", "--alpha", "1.5"], "'alpha' must be <= 1"),
    (["--teacher", "{teacher}", "--alpha", "-0.1"], "'alpha' must be >= 0"),
    (["--teacher", "{teacher}", "--temperature", "0"], "'temperature' must be > 0"),
    (["--teacher", "{teacher}", "--temperature", "-1"], "'temperature' must be > 0"),
    (["--teacher", "{teacher}", "--hidden-weight", "1", "--hidden-layers", "2:1"], "student layer 2 out of range"),
    (["--teacher", "{teacher}", "--hidden-weight", "1", "--hidden-layers", "1:3"], "teacher layer 3 out of range"),
    (["--teacher", "{teacher}", "--hidden-weight", "1", "--hidden-layers", "1-2"], "expected student:teacher"),
    (["--teacher", "{teacher}", "--hidden-layers", "1:1"], "no effect without"),
    (["--teacher", "{teacher}", "--d-model", "64"], "more than the teacher's"),
    (["--teacher", "{teacher}", "--init-from-teacher", "--shrink", "half"], "needs the teacher's widths"),
    (["--teacher", "{teacher}", "--mixup", "1"], "mixes input features"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_cli_bad_input_one_line_exit_2_nothing_written(tiny_ckpt, broken, tmp_path, args, message):
    out = tmp_path / "out"
    fill = {"missing": tmp_path / "nope", "broken": broken, "teacher": tiny_ckpt}
    argv = ["distill", *[a.format(**fill) for a in args], "--out", str(out)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not out.exists()


def test_cli_distills_and_prints_the_comparison(teacher, tmp_path):
    out = tmp_path / "s"
    result = CliRunner().invoke(app, ["distill", "--teacher", str(teacher), "--shrink", "quarter", "--epochs", "1",
                                      "--compare-scratch", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("teacher", "student (distilled)", "student (scratch)", "rel. test acc", "T²"):
        assert text in result.output
    assert load_checkpoint(out).model_config.d_model == 8
