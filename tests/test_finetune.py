"""finetune.py: `mhsa train --init CKPT` (imported encoders with their tokenizer, or any checkpoint)."""

from __future__ import annotations

import pytest
import torch

from mhsa_cli.checkpoint import load_checkpoint, load_model
from mhsa_cli.config import TrainConfig, build_config

from .conftest import assert_one_line_error, make_int8
from .test_cli import invoke

pytest.importorskip("transformers", reason="transformers (dev extra) is not installed")

from .test_hf_import import corpus, make_hf  # noqa: E402


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """(imported BERT base model with a fresh 3-class head, a 2-class CSV)."""
    tmp = tmp_path_factory.mktemp("ft")
    make_hf("bert", tmp / "hf", base=True)
    r = invoke("import", tmp / "hf", "--labels", "a,b,c", "--out", tmp / "imported")
    assert r.exit_code == 0, r.output
    csv = tmp / "data.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in corpus(120)))
    return tmp / "imported", csv


def _cfg(tmp_path, init, **kw):
    return build_config(TrainConfig, {"init": str(init), "out": str(tmp_path / "out"), "device": "cpu", **kw})


def test_init_keeps_the_encoder_and_replaces_a_head_with_other_labels(bert, tmp_path):
    from mhsa_cli.finetune import prepare_init

    imported, csv = bert
    data, mcfg, model, parent = prepare_init(_cfg(tmp_path, imported, data=str(csv)))
    src = load_model(imported)
    assert data.labels == ["neg", "pos"] and mcfg.num_classes == 2 and model.head.weight.shape == (2, 32)
    assert data.spec["name"] == "hf-text" and data.spec["tokenizer"] == load_checkpoint(imported).task_spec["tokenizer"]
    for k, v in src.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(model.state_dict()[k], v), k
    assert mcfg.style() == src.config.style() and parent.path == imported
    # first token is [CLS] (id 2), the rest right-padded with the model's pad id
    assert (data.train.x[:, 0] == 2).all() and (data.train.x[:, -1] == mcfg.pad_id).any()


@pytest.mark.slow
def test_train_init_fine_tunes_on_the_file(bert, tmp_path):
    imported, csv = bert
    r = invoke("train", "--init", imported, "--data", csv, "--epochs", 12, "--lr", 3e-3, "--batch-size", 16,
               "--device", "cpu", "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    meta = load_checkpoint(tmp_path / "ft").meta
    assert meta["lineage"][0]["operation"] == "import" and meta["lineage"][-1]["parent"] == str(imported)
    assert meta["task"]["labels"] == ["neg", "pos"] and meta["model"]["norm"] == "post"
    assert meta["metrics"]["val_acc"] >= 0.75  # the label is one word: an attention model finds it


def test_same_labels_keep_the_head(tmp_path, bert):
    from mhsa_cli.finetune import prepare_init

    imported, csv = bert
    r = invoke("train", "--init", imported, "--data", csv, "--epochs", 1, "--batch-size", 32, "--device", "cpu",
               "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    _, mcfg, model, _ = prepare_init(_cfg(tmp_path, tmp_path / "ft", data=str(csv)))
    assert torch.equal(model.head.weight, load_model(tmp_path / "ft").head.weight)


def test_init_without_data_continues_on_the_checkpoints_task(tiny_ckpt, tmp_path):
    r = invoke("train", "--init", tiny_ckpt, "--epochs", 1, "--device", "cpu", "--out", tmp_path / "again")
    assert r.exit_code == 0, r.output
    meta = load_checkpoint(tmp_path / "again").meta
    assert meta["task"] == load_checkpoint(tiny_ckpt).task_spec and meta["model"] == load_checkpoint(tiny_ckpt).meta["model"]


def test_init_refusals(tiny_ckpt, tmp_path, bert):
    _, csv = bert
    r = invoke("train", "--init", tiny_ckpt, "--data", csv, "--out", tmp_path / "x")
    assert_one_line_error(r, "stores no tokenizer")
    marked = make_int8(tiny_ckpt, tmp_path / "int8")
    assert_one_line_error(invoke("train", "--init", marked, "--out", tmp_path / "y"), "int8")
    r = invoke("train", "--init", tiny_ckpt, "--d-model", 64, "--out", tmp_path / "z")
    assert_one_line_error(r, "--d-model has no effect with --init")
    assert not any((tmp_path / n).exists() for n in "xyz")


@pytest.mark.parametrize("option", ["tokenizer=bpe", "min_freq=2"])
def test_init_refuses_a_tokenizer_option_in_one_line(bert, tmp_path, option):
    """The stored tokenizer reads the file: tokenizer=... was a TypeError, min_freq named another task."""
    imported, csv = bert
    r = invoke("train", "--init", imported, "--data", csv, "--task-opt", option, "--out", tmp_path / "x")
    assert_one_line_error(r, f"--task-opt {option.split('=')[0]} does not apply with --init", "stored tokenizer")
    assert not (tmp_path / "x").exists()
    symlink = tmp_path / "loop"
    symlink.symlink_to(symlink)
    assert_one_line_error(invoke("train", "--init", symlink, "--out", tmp_path / "y"), "symlink loop")
