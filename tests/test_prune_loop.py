"""prune/: the fine-tuning after pruning resumes the checkpoint's own training loop (lr, warm-up,
schedule and, for mhsa's text task, word dropout) unless given; a distilled student does not inherit."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from mhsa_cli.checkpoint import load_checkpoint, training_loop
from mhsa_cli.regularize import UNK_ID

from .conftest import assert_one_line_error
from .test_cli import invoke

WORDS = "the a film plot actor scene music story long short very quite rather".split()


def text_csv(path: Path, n: int = 120) -> Path:
    """A two-class CSV: the label follows one sentiment word among filler words."""
    rng = random.Random(0)
    rows = ["text,label"]
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 10))]
        words.insert(rng.randint(0, len(words)), "great" if label == "pos" else "awful")
        rows.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A from-scratch text model trained with lr 2e-3, linear decay and word dropout 0.2."""
    tmp = tmp_path_factory.mktemp("text")
    csv = text_csv(tmp / "t.csv")
    r = invoke("train", "--data", csv, "--epochs", 1, "--d-model", 16, "--d-ff", 32, "--heads", 4, "--lr", 2e-3,
               "--schedule", "linear", "--warmup", 0.1, "--token-dropout", 0.2, "--device", "cpu", "--out", tmp / "m")
    assert r.exit_code == 0, r.output
    return tmp / "m"


def last_settings(folder: Path) -> dict:
    return load_checkpoint(folder).meta["lineage"][-1]["settings"]


def test_training_loop_reads_the_latest_training_and_stops_at_a_distilled_student():
    scratch = {"operation": "train", "settings": {"lr": 3e-3, "warmup": 0.05, "schedule": "cosine",
                                                  "token_dropout": 0.1, "epochs": 30}}
    init = {"operation": "train", "settings": {"init": "x", "lr": 5e-5, "warmup": 0.1, "schedule": "linear",
                                               "token_dropout": 0.0}}
    prune = {"operation": "prune", "settings": {"lr": 1.0}}
    distill = {"operation": "distill", "settings": {"lr": 3e-3}}
    assert training_loop({"lineage": [scratch, prune]}) == {"lr": 3e-3, "warmup": 0.05, "schedule": "cosine",
                                                            "token_dropout": 0.1}
    assert training_loop({"lineage": [scratch, distill, prune]}) == {}  # a student: the stage defaults
    # after train --init: that fine-tuning's lr / warm-up / schedule, past a distillation too (as before)
    assert training_loop({"lineage": [{"operation": "import"}, init, distill]}) == {"lr": 5e-5, "warmup": 0.1,
                                                                                     "schedule": "linear"}
    assert training_loop({"lineage": []}) == {}


def test_prune_fine_tunes_a_text_model_with_its_own_training_loop(text_model, tmp_path):
    r = invoke("prune", text_model, "--ratio", 0.5, "--finetune-epochs", 1, "--device", "cpu", "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    s = last_settings(tmp_path / "p")
    assert (s["lr"], s["warmup"], s["schedule"], s["token_dropout"]) == (2e-3, 0.1, "linear", 0.2)
    assert "fine-tuning: 1 epoch per step, batch 64, lr 0.002 (0.1 warm-up, linear decay), weight decay 0.01, " \
           "word dropout 0.2" in r.output
    r = invoke("prune", text_model, "--ratio", 0.5, "--finetune-epochs", 1, "--token-dropout", 0, "--lr", 1e-3,
               "--device", "cpu", "--out", tmp_path / "q")
    assert r.exit_code == 0, r.output
    s = last_settings(tmp_path / "q")
    assert (s["lr"], s["warmup"], s["token_dropout"]) == (1e-3, 0.1, 0.0)  # the explicit values win
    assert "word dropout" not in r.output


def test_a_distilled_student_is_pruned_with_the_stage_defaults(text_model, tmp_path):
    r = invoke("distill", "--teacher", text_model, "--layers", 1, "--epochs", 1, "--device", "cpu",
               "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    r = invoke("prune", tmp_path / "s", "--ratio", 0.5, "--finetune-epochs", 1, "--device", "cpu",
               "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    s = last_settings(tmp_path / "p")
    assert (s["lr"], s["warmup"], s["schedule"], s["token_dropout"]) == (1e-3, 0.05, "cosine", 0.0)


def test_word_dropout_on_a_task_without_words_is_one_line(tiny_ckpt, tmp_path):
    r = invoke("prune", tiny_ckpt, "--ratio", 0.5, "--finetune-epochs", 1, "--token-dropout", 0.1,
               "--out", tmp_path / "p")
    assert_one_line_error(r, "--token-dropout", "not 'order'")
    assert not (tmp_path / "p").exists()


def test_kd_fine_tuning_gives_teacher_and_student_the_same_dropped_words(text_model):
    """With KD from the unpruned model, word dropout applies once: both models read the same ids."""
    from mhsa_cli.checkpoint import load_model
    from mhsa_cli.config import PruneConfig, build_config
    from mhsa_cli.prune.kd import KDTeacher, prune_loss_fn
    from mhsa_cli.train import LoopConfig

    teacher, student = load_model(text_model), load_model(text_model)
    seen: dict[str, torch.Tensor] = {}
    for name, m in (("teacher", teacher), ("student", student)):
        m.register_forward_pre_hook(lambda mod, args, kw, name=name: seen.__setitem__(name, args[0].clone()),
                                    with_kwargs=True)
    cfg = build_config(PruneConfig, {"checkpoint": str(text_model), "kd_weight": 0.5, "finetune_epochs": 1})
    fn = prune_loss_fn(cfg, KDTeacher(teacher, {}, "t", "id"), [0], LoopConfig(token_dropout=0.5, seed=0))
    x = torch.full((16, 8), 7, dtype=torch.long)  # every id a real word (> UNK_ID)
    fn(student, x, torch.zeros(16, dtype=torch.long))
    assert torch.equal(seen["teacher"], seen["student"])
    dropped = (seen["student"] == UNK_ID).float().mean().item()
    assert 0.3 < dropped < 0.7 and torch.all((seen["student"] == UNK_ID) | (seen["student"] == 7))
