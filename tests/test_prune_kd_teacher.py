"""prune --kd-teacher / --kd-hidden-layers (prune/kd.py): KD fine-tuning from another checkpoint
(e.g. the deeper model a distilled student came from), its block pairs against hand values and
the hand-computed loss, its bad inputs, and the recipe key that names an earlier stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mhsa_cli.checkpoint import load_checkpoint, load_model
from mhsa_cli.cli import app
from mhsa_cli.config import PruneConfig, build_config
from mhsa_cli.errors import MhsaError
from mhsa_cli.prune.kd import KDTeacher, block_map, hidden_pairs, prune_loss_fn
from mhsa_cli.recipe import validate_recipe
from mhsa_cli.train import LoopConfig

from .conftest import assert_one_line_error
from .test_prune_budget import spy_fit
from .test_prune_structured import deep, prune_api, random_model, tokens  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def deep6(tmp_path_factory, one_thread) -> Path:
    """A 6-block model of the same tiny ``order`` task and width as ``deep`` (3 blocks)."""
    from mhsa_cli.train import train

    from .conftest import tiny_train_config

    out = tmp_path_factory.mktemp("kdteacher") / "deep6"
    train(tiny_train_config(out, layers=6, epochs=1, seed=1))
    return out


def cfg(**kw):
    return build_config(PruneConfig, {"checkpoint": "x", "finetune_epochs": 1, "kd_weight": 0.5, **kw})


# ---------------------------------------------------------------- block pairs by hand

def test_block_map_uniform_identity_and_explicit_pairs():
    assert block_map(cfg(), 3, 6, own=False) == {1: 2, 2: 4, 3: 6}  # TinyBERT: i * 6 // 3
    assert block_map(cfg(), 4, 6, own=False) == {1: 1, 2: 3, 3: 4, 4: 6}
    assert block_map(cfg(), 3, 3, own=True) == {1: 1, 2: 2, 3: 3}
    explicit = cfg(kd_hidden_weight=1.0, kd_hidden_layers=["0:0", "3:5"])
    assert block_map(explicit, 3, 6, own=False) == {0: 0, 3: 5}
    assert hidden_pairs([0, 2], {0: 0, 3: 5}) == [(0, 0), (2, 5)]  # block 2 dropped: input block 3 is now 2
    assert hidden_pairs([1], {1: 2, 3: 6}) == []  # an unpaired kept block is left out
    with pytest.raises(MhsaError, match="each block of the model pairs with one teacher block"):
        block_map(cfg(kd_hidden_weight=1.0, kd_hidden_layers=["1:2", "1:3"]), 3, 6, own=False)
    with pytest.raises(MhsaError, match="--kd-hidden-layers: teacher layer 7 out of range 0..6"):
        block_map(cfg(kd_hidden_weight=1.0, kd_hidden_layers=["1:7"]), 3, 6, own=False)


def test_loss_with_a_deeper_teacher_is_the_hand_computed_mix():
    teacher = random_model(heads=(2,) * 6, seed=5).requires_grad_(False)
    student = random_model(seed=3)  # 3 blocks, same width 16
    x, y = tokens(), torch.tensor([0, 1, 2, 0, 1, 2])
    kd = KDTeacher(teacher, {1: 2, 2: 4, 3: 6}, "t")
    loss, _ = prune_loss_fn(cfg(kd_weight=0.25, kd_temperature=2.0, kd_hidden_weight=0.5), kd, [0, 1, 2],
                            LoopConfig())(student, x, y)
    with torch.no_grad():
        s, t = student.forward_features(x), teacher.forward_features(x)
        p_t = torch.softmax(t.logits / 2, -1)
        kl = (p_t * (p_t.log() - torch.log_softmax(s.logits / 2, -1))).sum(-1).mean()
        real = s.pad_mask.float()  # (B, 1 + T)
        mse = [((s.hidden_states[i] - t.hidden_states[j]).pow(2).mean(-1) * real).sum() / real.sum()
               for i, j in ((1, 2), (2, 4), (3, 6))]
        expected = 0.75 * F.cross_entropy(s.logits, y) + 0.25 * 4 * kl + 0.5 * sum(mse) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- the command

def test_prune_distils_from_the_named_teacher_with_uniform_pairs(deep, deep6, tmp_path, monkeypatch):
    calls = spy_fit(monkeypatch)
    prune_api(deep, tmp_path / "kd", ratio=0.5, drop_layers_at=[1], finetune_epochs=1, kd_weight=0.5,
              kd_hidden_weight=0.1, kd_teacher=str(deep6))
    (fn,) = calls
    t6 = load_model(deep6).state_dict()
    assert len(fn.teacher.blocks) == 6 and not fn.teacher.training
    assert not any(p.requires_grad for p in fn.teacher.parameters())
    assert all(torch.equal(v, t6[k]) for k, v in fn.teacher.state_dict().items())
    assert fn.pairs == [(1, 2), (2, 6)]  # input block 2 dropped: kept 1 -> teacher 2, kept 3 (now 2) -> 6
    kd = json.loads((tmp_path / "kd" / "pruning.json").read_text())["plan"]["kd"]
    assert kd["teacher"] == str(deep6) and kd["teacher_id"] == load_checkpoint(deep6).meta["id"]
    assert kd["hidden_pairs"] == ["1:2", "2:4", "3:6"]


class Stop(Exception):
    pass


def stop(loss_fn):
    raise Stop


def test_kd_hidden_layers_pick_the_pairs_of_the_unpruned_self(deep, tmp_path, monkeypatch):
    calls = spy_fit(monkeypatch, then=stop)
    with pytest.raises(Stop):
        prune_api(deep, tmp_path / "kd", ratio=0.5, finetune_epochs=1, kd_hidden_weight=1.0,
                  kd_hidden_layers=["0:0", "3:3"])
    assert calls[0].pairs == [(0, 0), (3, 3)] and len(calls[0].teacher.blocks) == 3
    assert not (tmp_path / "kd").exists()


# ---------------------------------------------------------------- bad input

def relabelled(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "checkpoint.json").read_text())
    meta["task"]["labels"] = [f"other{i}" for i in range(meta["model"]["num_classes"])]
    (dst / "checkpoint.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def narrow(tmp_path_factory, one_thread) -> Path:
    from mhsa_cli.train import train

    from .conftest import tiny_train_config

    out = tmp_path_factory.mktemp("kdnarrow") / "narrow"
    train(tiny_train_config(out, layers=2, epochs=1, d_model=16, heads=2))
    return out


@pytest.fixture(scope="module")
def int8(deep6, tmp_path_factory) -> Path:
    from mhsa_cli.config import QuantizeConfig
    from mhsa_cli.quantize import quantize

    out = tmp_path_factory.mktemp("kdint8") / "int8"
    quantize(build_config(QuantizeConfig, {"checkpoint": str(deep6), "out": str(out)}))
    return out


KD = ["--ratio", "0.5", "--finetune-epochs", "1", "--kd-weight", "0.5"]


@pytest.mark.parametrize("args, message", [
    (["--ratio", "0.5", "--kd-teacher", "{deep6}"], "--kd-teacher teaches through --kd-weight"),
    ([*KD, "--kd-hidden-layers", "1:2"], "--kd-hidden-layers pairs blocks for the hidden loss"),
    ([*KD, "--kd-hidden-weight", "1", "--kd-hidden-layers", "4:2"], "model layer 4 out of range 0..3"),
    ([*KD, "--kd-hidden-weight", "1", "--kd-hidden-layers", "x"], "expected model:teacher pairs like 1:2"),
    ([*KD, "--kd-teacher", "{missing}"], "missing"),
    ([*KD, "--kd-teacher", "{int8}"], "int8"),
    ([*KD, "--kd-teacher", "{relabelled}"], "cannot teach this model: labels"),
    ([*KD, "--kd-hidden-weight", "1", "--kd-teacher", "{narrow}"], "width 16 vs the model's 32"),
])
def test_bad_kd_teacher_input_one_line_exit_2_nothing_written(deep, deep6, int8, narrow, tmp_path, args, message):
    paths = {"deep6": deep6, "missing": tmp_path / "missing", "int8": int8, "narrow": narrow}
    if "{relabelled}" in args:
        paths["relabelled"] = relabelled(deep6, tmp_path / "relabelled")
    args = [a.format(**{k: str(v) for k, v in paths.items()}) if "{" in a else a for a in args]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prune", str(deep), "--out", str(out), *args])
    assert_one_line_error(result, message)
    assert not out.exists()


def test_width_differs_but_logits_only_is_accepted(deep, narrow, tmp_path):
    r = prune_api(deep, tmp_path / "kd", ratio=0.5, finetune_epochs=1, kd_weight=0.5, kd_teacher=str(narrow))
    assert r.kd["teacher"] == str(narrow) and r.kd["hidden_pairs"] is None


# ---------------------------------------------------------------- recipes

RECIPE = """\
name: kd
defaults:
  seed: 0
  device: cpu
stages:
  - name: base
    type: train
    epochs: 1
    layers: 2
    d_model: 16
    heads: 2
    d_ff: 32
    task_options: {n_train: 200, n_val: 100, n_test: 100}
  - name: small
    type: distill
    from: base
    layers: 1
    d_model: 16
    epochs: 1
  - name: deploy
    type: prune
    from: small
    ratio: 0.5
    finetune_epochs: 1
    kd_weight: 0.5
    kd_teacher: base
"""


def test_recipe_kd_teacher_names_an_earlier_stage_and_is_an_input(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    plan = validate_recipe(path, {}, tmp_path / "out")
    deploy = plan.stages[-1]
    assert deploy.inputs == ["small", "base"] and deploy.config.kd_teacher == str(tmp_path / "out" / "base")
    changed = validate_recipe(path, {"base.epochs": 2}, tmp_path / "out").stages[-1]
    assert changed.hash != deploy.hash  # the teacher's settings are the deploy stage's input
    moved = validate_recipe(path, {}, tmp_path / "elsewhere").stages[-1]
    assert moved.hash == deploy.hash  # the folder is implied by the stage name
    for bad, fragment in (("nope", "kd_teacher 'nope' is not an earlier stage"),
                          ("deploy", "refers to itself")):
        path.write_text(RECIPE.replace("kd_teacher: base", f"kd_teacher: {bad}"))
        with pytest.raises(MhsaError, match=fragment):
            validate_recipe(path, {}, tmp_path / "out")
