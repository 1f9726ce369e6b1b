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
    with pytest.raises(MhsaError, match="disagree"):
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
