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


def test_init_picks_fine_tuning_defaults_and_explicit_values_win(bert, tmp_path):
    """--init resolves to BERT's fine-tuning recipe (stored in the lineage); a fresh model keeps its own."""
    imported, csv = bert
    cfg = _cfg(tmp_path, imported, data=str(csv))
    got = {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "warmup", "schedule", "weight_decay")}
    assert got == dict(epochs=3, batch_size=32, lr=5e-5, warmup=0.1, schedule="linear", weight_decay=0.01)
    assert _cfg(tmp_path, imported, lr=1e-4, schedule="cosine").lr == 1e-4
    fresh = build_config(TrainConfig, {"out": str(tmp_path / "o")})
    assert (fresh.lr, fresh.warmup, fresh.schedule) == (1e-3, 0.05, "cosine")
    r = invoke("train", "--init", imported, "--data", csv, "--epochs", 1, "--device", "cpu", "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    assert "fine-tuning: 1 epochs, batch 32, lr 5e-05 (0.1 warm-up, linear decay)" in r.output
    settings = load_checkpoint(tmp_path / "ft").meta["lineage"][-1]["settings"]
    assert (settings["lr"], settings["schedule"], settings["warmup"]) == (5e-5, "linear", 0.1)


def test_prune_and_distill_inherit_the_fine_tuning_loop_of_an_init_model(bert, tmp_path):
    """After train --init, pruning's fine-tuning and distillation use the model's own lr / warm-up /
    schedule (5e-5, 0.1, linear) unless given (from-scratch checkpoints: tests/test_prune_loop.py)."""
    from mhsa_cli.checkpoint import finetune_loop

    imported, csv = bert
    r = invoke("train", "--init", imported, "--data", csv, "--epochs", 1, "--lr", 7e-5, "--device", "cpu",
               "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    assert finetune_loop(load_checkpoint(tmp_path / "ft").meta) == {"lr": 7e-5, "warmup": 0.1, "schedule": "linear"}
    r = invoke("prune", tmp_path / "ft", "--ratio", 0.25, "--finetune-epochs", 1, "--warmup", 0.2,
               "--device", "cpu", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    s = load_checkpoint(tmp_path / "p").meta["lineage"][-1]["settings"]
    assert (s["lr"], s["warmup"], s["schedule"]) == (7e-5, 0.2, "linear")  # the explicit warm-up wins
    r = invoke("distill", "--teacher", tmp_path / "p", "--layers", 1, "--epochs", 1, "--device", "cpu",
               "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    s = load_checkpoint(tmp_path / "s").meta["lineage"][-1]["settings"]
    assert (s["lr"], s["warmup"], s["schedule"]) == (7e-5, 0.1, "linear")  # the latest train --init's


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


def test_prune_counts_flops_at_the_datas_length_not_the_encoders_positions(bert, tmp_path):
    """An imported encoder keeps its position table (max_len 40 here) while its data needs far fewer
    positions: FLOPs (report, metrics, budget) are counted at the data's max_len, recorded as such."""
    from mhsa_cli.model import attention_flops

    imported, _ = bert
    csv = tmp_path / "short.csv"  # two words a row: a few tokens with [CLS] / [SEP]
    csv.write_text("text,label\n" + "".join(f"{' '.join(t.split()[:2])},{lab}\n" for t, lab in corpus(60)))
    r = invoke("train", "--init", imported, "--data", csv, "--epochs", 1, "--device", "cpu", "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    ft = load_checkpoint(tmp_path / "ft")
    n = ft.task_spec["max_len"]
    assert n < ft.model_config.max_len  # the premise: the data is shorter than the positions
    r = invoke("prune", tmp_path / "ft", "--ratio", 0.5, "--device", "cpu", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    assert f"one sample at {n} positions" in r.output
    p = load_checkpoint(tmp_path / "p")
    m = p.meta["metrics"]
    assert m["flops_seq_len"] == n and p.meta["lineage"][-1]["settings"]["budget_seq_len"] == n
    assert (m["flops_before"], m["flops"]) == (attention_flops(ft.model_config, n), attention_flops(p.model_config, n))
    assert m["flops_before"] < attention_flops(ft.model_config)  # not the max_len count


def test_prune_fine_tuning_is_reproducible_whatever_the_process_random_state(tmp_path):
    """Dropout masks come from torch's global stream, which a process starts at a random seed:
    two identical prunes with fine-tuning give identical weights however that stream stood."""
    import torch

    from mhsa_cli.checkpoint import load_checkpoint
    from mhsa_cli.config import PruneConfig, build_config
    from mhsa_cli.prune import prune
    from mhsa_cli.train import train

    from .conftest import tiny_train_config

    train(tiny_train_config(tmp_path / "base", epochs=1, dropout=0.3))
    ids = []
    for i, state in enumerate((1, 2, 2)):
        torch.manual_seed(state)  # as if a new process: another starting point of the stream
        out = tmp_path / f"p{i}"
        prune(build_config(PruneConfig, {"checkpoint": str(tmp_path / "base"), "out": str(out), "ratio": 0.5,
                                         "finetune_epochs": 1, "device": "cpu", "seed": 0 if i < 2 else 1}))
        ids.append(load_checkpoint(out).meta["id"])
    assert ids[0] == ids[1] and ids[2] != ids[0]  # the seed, not the stream, decides the dropout masks
