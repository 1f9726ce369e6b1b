"""checkpoint.py: save -> load, atomic writes, refusing bad folders, never unpickling."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from mhsa_cli.checkpoint import (META, WEIGHTS, atomic_dir, load_checkpoint, load_model, make_meta,
                                 save_model)
from mhsa_cli.errors import MhsaError
from mhsa_cli.model import ModelConfig, build_model


def small_config(heads=(2, 2)):
    return ModelConfig("tokens", 10, 3, vocab_size=12, d_model=16, heads=list(heads), head_dim=8, d_ff=24)


def save_small(path, heads=(2, 2), force=False):
    model = build_model(small_config(heads), seed=0).eval()
    meta = make_meta("float", model.config, {"name": "order", "seed": 0}, "train", {"epochs": 1}, {"test_acc": 0.5})
    save_model(path, model, meta, force=force)
    return model


def test_save_load_identical_logits_and_meta(tmp_path):
    model = save_small(tmp_path / "c", heads=(2, 0))
    ckpt = load_checkpoint(tmp_path / "c")
    assert ckpt.kind == "float" and ckpt.model_config.heads == [2, 0]
    assert ckpt.meta["environment"]["torch"] == torch.__version__
    assert ckpt.meta["lineage"][0]["operation"] == "train" and ckpt.meta["lineage"][0]["parent"] is None
    assert len(ckpt.meta["id"]) == 16
    x = torch.randint(0, 12, (4, 10))
    assert torch.equal(load_model(ckpt)(x), model(x))


def test_existing_folder_needs_force_and_force_replaces(tmp_path):
    save_small(tmp_path / "c")
    with pytest.raises(MhsaError, match="--force"):
        save_small(tmp_path / "c")
    save_small(tmp_path / "c", heads=(1, 1), force=True)
    assert load_checkpoint(tmp_path / "c").model_config.heads == [1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp folders left


def test_failed_write_leaves_nothing(tmp_path):
    def write(tmp):
        (tmp / "half.txt").write_text("x")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle

    with pytest.raises(KeyboardInterrupt):
        atomic_dir(tmp_path / "c", False, write)
    assert list(tmp_path.iterdir()) == []


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(MhsaError, match="is a file"):
        save_small(tmp_path / "f")


@pytest.mark.parametrize("damage,msg", [
    (lambda p: (p / WEIGHTS).unlink(), "missing model.safetensors"),
    (lambda p: (p / META).unlink(), "missing checkpoint.json"),
    (lambda p: (p / META).write_text("{not json"), "not valid JSON"),
    (lambda p: (p / WEIGHTS).write_bytes((p / WEIGHTS).read_bytes()[:100]), "corrupt"),
    (lambda p: (p / META).write_text(json.dumps({"format": "other"})), "not an mhsa checkpoint"),
])
def test_damaged_checkpoints_are_refused(tmp_path, damage, msg):
    save_small(tmp_path / "c")
    damage(tmp_path / "c")
    with pytest.raises(MhsaError, match=msg):
        load_model(tmp_path / "c")


def test_json_shapes_disagreeing_with_weights(tmp_path):
    save_small(tmp_path / "c")
    meta = json.loads((tmp_path / "c" / META).read_text())
    meta["model"]["heads"] = [2, 1]
    (tmp_path / "c" / META).write_text(json.dumps(meta))
    with pytest.raises(MhsaError, match=r"layer 1: the JSON says 1 head but the weights hold 2 "
                                        r"\(blocks.1.attn.q.weight: \(16, 16\)\)"):
        load_model(tmp_path / "c")


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle was loaded')",))


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(tmp_path):
    save_small(tmp_path / "c")
    (tmp_path / "c" / WEIGHTS).write_bytes(pickle.dumps(Boom()))
    with pytest.raises(MhsaError, match="corrupt"):
        load_model(tmp_path / "c")


def test_missing_folder(tmp_path):
    with pytest.raises(MhsaError, match="not found"):
        load_checkpoint(tmp_path / "nope")


# --------------------------------------------------------------------------- schema and weights, via `mhsa info`

def _edit_meta(path, edit):
    meta = json.loads((path / META).read_text())
    edit(meta)
    (path / META).write_text(json.dumps(meta))


def _info(path):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    return CliRunner().invoke(app, ["info", str(path)])


@pytest.mark.parametrize("edit,fragment", [
    (lambda m: m["model"].__setitem__("heads", ["x", 2]), "'model.heads' must be a list of integers, got [\"x\", 2]"),
    (lambda m: m["model"].__setitem__("heads", 2), "'model.heads' must be a list of integers"),
    (lambda m: m["model"].__setitem__("d_model", "16"), "'model.d_model' must be an integer"),
    (lambda m: m["model"].__setitem__("dropout", None), "'model.dropout' must be a number"),
    (lambda m: m["model"].pop("num_classes"), "no 'model.num_classes'"),
    (lambda m: m["model"].pop("pooling"), "no 'model.pooling'"),  # was a KeyError in info
    (lambda m: m["model"].pop("d_model"), "no 'model.d_model'"),
    (lambda m: m["model"].__setitem__("ln_eps", "x"), "'model.ln_eps' must be a number"),  # was a TypeError
    (lambda m: m["model"].__setitem__("embed_norm", "yes"), "'model.embed_norm' must be true or false"),
    (lambda m: m["model"].__setitem__("colour", 1), "bad model config (model config has unknown keys: colour)"),
    (lambda m: m["model"].__setitem__("heads", [2, -1]), "head counts must be >= 0"),
    (lambda m: m.__setitem__("model", [1]), "'model' must be a mapping"),
    (lambda m: m.__setitem__("metrics", [0.5]), "'metrics' must be a mapping, got [0.5]"),
    (lambda m: m.__setitem__("environment", "x"), "'environment' must be a mapping"),
    (lambda m: m.__setitem__("task", "order"), "'task' must be a mapping"),
    (lambda m: m["task"].pop("name"), "'task.name' must be a string, got null"),
    (lambda m: m["task"].__setitem__("labels", ["a", "a", "b"]), "'task.labels' names class 'a' twice"),
    (lambda m: m["task"].__setitem__("labels", ["a", "b"]), "'task.labels' names 2 classes but the model has 3"),
    (lambda m: m.__setitem__("kind", 5), "'kind' must be a string"),
    (lambda m: m.__setitem__("kind", "fp4"), "unknown kind 'fp4'; known: float, int8"),
    (lambda m: m.__setitem__("lineage", {"a": 1}), "'lineage' must be a list"),
    (lambda m: m["lineage"][0].__setitem__("settings", "x"), "'lineage[0].settings' must be a mapping"),
    (lambda m: m["lineage"][0].pop("operation"), "'lineage[0].operation' must be a string"),
    (lambda m: m.__setitem__("id", 7), "'id' must be a string"),
    (lambda m: m.__setitem__("version", 99), "format version 99 is newer"),
    (lambda m: m["model"].__setitem__("heads", [1, 2]), "layer 0: the JSON says 1 head but the weights hold 2"),
    (lambda m: m["model"].__setitem__("d_ff", 32), "(blocks.0.ff1.weight: file (24, 16), JSON (32, 16))"),
])
def test_info_refuses_a_malformed_json_in_one_line(tmp_path, edit, fragment):
    from tests.conftest import assert_one_line_error

    save_small(tmp_path / "c")
    _edit_meta(tmp_path / "c", edit)
    assert_one_line_error(_info(tmp_path / "c"), f"checkpoint {tmp_path / 'c'}: ", fragment)


@pytest.mark.parametrize("text,fragment", [
    ("{", "not valid JSON (Expecting property name"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON (nested too deeply)"),
    (json.dumps({"format": "mhsa-checkpoint", "kind": "x" * 100_000, "model": {}, "task": {}}),
     "more characters)"),  # an error quotes a capped excerpt
    ("[1, 2]", "not an mhsa checkpoint"),
])
def test_info_on_broken_json_is_one_short_line(tmp_path, text, fragment):
    from tests.conftest import assert_one_line_error

    save_small(tmp_path / "c")
    (tmp_path / "c" / META).write_text(text)
    result = _info(tmp_path / "c")
    assert_one_line_error(result, fragment)
    assert len(result.output) < 500


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_on_load_by_every_command(tmp_path, value):
    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from mhsa_cli.cli import app
    from tests.conftest import assert_one_line_error

    save_small(tmp_path / "c")
    tensors = load_file(str(tmp_path / "c" / WEIGHTS))
    tensors["blocks.1.ff2.weight"][3, :2] = value
    save_file(tensors, str(tmp_path / "c" / WEIGHTS))
    fragment = "weight blocks.1.ff2.weight holds 2 NaN/Inf values"
    for args in (["info"], ["quantize", "--out", str(tmp_path / "q")], ["bench", "--out", str(tmp_path / "b")],
                 ["prune", "--out", str(tmp_path / "p")], ["distill", "--out", str(tmp_path / "s"), "--teacher"]):
        result = CliRunner().invoke(app, [*args, str(tmp_path / "c")])
        assert_one_line_error(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # nothing written


# --------------------------------------------------------------------------- output paths, checked before any work

def _tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _train_args(out):
    return ["train", "--out", str(out), "--epochs", "1", "--d-model", "16", "--heads", "2", "--d-ff", "16",
            "--task-opt", "n_train=60", "--task-opt", "n_val=20", "--task-opt", "n_test=20", "--device", "cpu"]


@pytest.mark.parametrize("make_out,fragment", [
    (lambda p: [(p / "file").write_text("x"), p / "file" / "sub" / "out"][1], "/file is a file"),
    (lambda p: ((p / "a").symlink_to(p / "b"), (p / "b").symlink_to(p / "a")) and p / "a" / "out",
     "goes through a symlink loop"),
    (lambda p: (p / "dangling").symlink_to(p / "nowhere") or p / "dangling", "is a broken symlink"),
    (lambda p: ".", "is the current folder or above it"),
    (lambda p: "..", "is the current folder or above it"),
    (lambda p: "", "the output folder is empty"),
    (lambda p: " ", "the output folder is empty"),
])
@pytest.mark.parametrize("force", [False, True])
def test_bad_output_paths_are_refused_before_training(tmp_path, monkeypatch, make_out, fragment, force):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app
    from tests.conftest import assert_one_line_error

    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    out = make_out(tmp_path)
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, _train_args(out) + (["--force"] if force else []))
    assert_one_line_error(result, fragment)
    assert _tree(tmp_path) == before and (work / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["prune", "quantize", "distill"])
@pytest.mark.parametrize("where", ["same", "above"])
def test_an_output_equal_to_or_containing_the_input_is_refused(tmp_path, command, where):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app
    from tests.conftest import assert_one_line_error

    src = tmp_path / "runs" / "c"
    save_small(src)
    before = _tree(tmp_path)
    out = src if where == "same" else tmp_path / "runs"
    args = [command, "--out", str(out), "--force"]
    args += ["--teacher", str(src)] if command == "distill" else [str(src)]
    result = CliRunner().invoke(app, args)
    assert_one_line_error(result, f"output folder {out} {'is' if where == 'same' else 'contains'} the input {src}")
    assert _tree(tmp_path) == before


def test_training_data_inside_the_output_folder_is_refused(tmp_path):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app
    from tests.conftest import assert_one_line_error

    data = tmp_path / "runs" / "data.csv"
    data.parent.mkdir()
    data.write_text("text,label\n" + "".join(f"w{i} x,{'ab'[i % 2]}\n" for i in range(40)))
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "runs"), "--force"])
    assert_one_line_error(result, "contains the input")
    assert data.exists()


@pytest.mark.parametrize("fail_call", [1, 2])
def test_force_never_loses_the_old_folder_when_a_rename_fails(tmp_path, monkeypatch, fail_call):
    import os

    from mhsa_cli import checkpoint

    save_small(tmp_path / "c", heads=(2, 2))
    before = _tree(tmp_path / "c")
    calls = []
    real_replace = os.replace

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == fail_call:  # 1: old -> aside; 2: new -> in place
            raise OSError("disk on fire")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk on fire"):
        save_small(tmp_path / "c", heads=(1, 1), force=True)
    monkeypatch.undo()
    assert _tree(tmp_path / "c") == before  # the old checkpoint, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp or aside folder left
    assert load_checkpoint(tmp_path / "c").model_config.heads == [2, 2]


def test_force_replaces_and_then_removes_the_old_folder(tmp_path):
    save_small(tmp_path / "c", heads=(2, 2))
    (tmp_path / "c" / "stale.txt").write_text("old")
    save_small(tmp_path / "c", heads=(1, 1), force=True)
    assert not (tmp_path / "c" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_an_input_through_a_symlink_loop_is_one_line(tmp_path):
    from mhsa_cli.checkpoint import check_output_dir

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(MhsaError, match=r"^input .*a goes through a symlink loop$"):
        check_output_dir(tmp_path / "out", False, inputs=[tmp_path / "a"])
    with pytest.raises(MhsaError, match=r"^output path .*b goes through a symlink loop$"):
        check_output_dir(tmp_path / "b", False)
