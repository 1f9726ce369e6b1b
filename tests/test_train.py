"""train.py: determinism, validation-based selection, the test split untouched, every flag matters."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mhsa_cli.checkpoint import load_checkpoint, load_model
from mhsa_cli.model import build_model, make_config
from mhsa_cli.tasks import Split, load_task
from mhsa_cli.train import LoopConfig, evaluate, fit, lr_lambda, train

from .conftest import TINY_TASK, tiny_train_config


def weights(path):
    return load_checkpoint(path).tensors


def test_same_seed_same_weights_different_seed_differs(tmp_path):
    train(tiny_train_config(tmp_path / "a", epochs=1))
    train(tiny_train_config(tmp_path / "b", epochs=1))
    train(tiny_train_config(tmp_path / "c", epochs=1, seed=1))
    a, b, c = weights(tmp_path / "a"), weights(tmp_path / "b"), weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_metrics_match_a_fresh_evaluation(tiny_ckpt):
    ckpt = load_checkpoint(tiny_ckpt)
    data = load_task("order", seed=0, **TINY_TASK)
    model = load_model(ckpt)
    assert evaluate(model, data.val) == ckpt.meta["metrics"]["val_acc"]
    assert evaluate(model, data.test) == ckpt.meta["metrics"]["test_acc"]
    hist = ckpt.meta["extra"]["history"]
    best = max(hist, key=lambda h: h["val_acc"])
    assert ckpt.meta["metrics"]["best_epoch"] == best["epoch"]


def tiny_setup():
    data = load_task("order", seed=0, **TINY_TASK)
    cfg = make_config("tokens", data.max_len, data.num_classes, data.vocab_size, 0, 1, 16, 2, 32, 0.0, "cls")
    return data, cfg


def test_fit_never_touches_the_test_split():
    data, cfg = tiny_setup()
    # ids far outside the vocabulary: any forward pass on them would raise
    data.test = Split(torch.full_like(data.test.x, 10_000), data.test.y)
    fit(build_model(cfg, seed=0), data, LoopConfig(epochs=2, patience=1))


def test_early_stopping_and_best_weights_kept():
    data, cfg = tiny_setup()
    model = build_model(cfg, seed=0)
    res = fit(model, data, LoopConfig(epochs=6, lr=1e-12, patience=2, warmup=0))
    assert len(res.history) == 3  # epoch 1 is best, two stale epochs, stop
    assert res.best_epoch == 1


def test_warmup_then_cosine_schedule():
    f = lr_lambda(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5, abs=0.02) and f(99) < 0.01
    assert lr_lambda(100, 0.0)(0) == 1.0


@pytest.mark.parametrize("change", [
    {"lr": 3e-3}, {"warmup": 0.5}, {"weight_decay": 0.3}, {"grad_clip": 0.01}, {"label_smoothing": 0.2},
    {"dropout": 0.3}, {"pooling": "mean"}, {"batch_size": 32}, {"seed": 3}, {"d_ff": 48}, {"layers": 1},
    {"schedule": "linear"},
])
def test_every_training_flag_changes_the_result(tmp_path, change):
    base = tiny_train_config(tmp_path / "base", epochs=1, d_model=16, heads=2)
    train(base)
    cfg = dataclasses.replace(base, out=str(tmp_path / "changed"), **change)
    train(cfg)
    a, b = weights(tmp_path / "base"), weights(tmp_path / "changed")
    assert set(a) != set(b) or any(a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- mixup
def test_mixup_mixes_inputs_and_labels_reproducibly():
    from mhsa_cli.train import Mixup

    x, y = torch.randn(8, 4, 3), torch.arange(8)
    xm, y2, lam = Mixup(1.0, seed=3)(x, y)
    assert 0.0 < lam < 1.0 and sorted(y2.tolist()) == list(range(8))  # y2 = y[perm]
    assert torch.allclose(xm, lam * x + (1 - lam) * x[y2])
    xm_again, y2_again, lam_again = Mixup(1.0, seed=3)(x, y)
    assert lam_again == lam and torch.equal(y2_again, y2) and torch.equal(xm_again, xm)
    assert Mixup(1.0, seed=4)(x, y)[2] != lam
    with pytest.raises(ValueError):
        Mixup(0.0, seed=0)


def test_cross_entropy_with_mixup_is_the_mixed_label_loss():
    import torch.nn.functional as F

    from mhsa_cli.train import Mixup, cross_entropy_loss

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    x, y = torch.randn(8, 4, 3), torch.randint(0, 5, (8,))
    loss, logits = cross_entropy_loss(0.0, Mixup(0.4, seed=1))(model, x, y)
    xm, y2, lam = Mixup(0.4, seed=1)(x, y)  # the same draw
    out = model(xm)
    assert torch.allclose(logits, out)
    assert loss.item() == pytest.approx((lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y2)).item())
    plain, _ = cross_entropy_loss()(model, x, y)
    assert plain.item() == pytest.approx(F.cross_entropy(model(x), y).item())


def test_token_dropout_replaces_only_real_tokens_by_unk_reproducibly():
    from mhsa_cli.train import TokenDropout

    x = torch.randint(2, 50, (64, 40))  # (B, T) real tokens
    x[:, 30:] = 0  # padding
    x[:, 0] = 1  # an <unk> already
    out = TokenDropout(0.25, seed=5)(x)
    changed = out != x
    assert torch.equal(out[changed], torch.ones_like(out[changed]))  # every change is to <unk> (id 1)
    assert not changed[:, 30:].any() and torch.equal(out[:, 0], x[:, 0])  # padding and <unk> untouched
    share = changed[:, 1:30].float().mean().item()  # 1856 real tokens: p = 0.25 +- 4 standard errors
    assert abs(share - 0.25) < 4 * (0.25 * 0.75 / 1856) ** 0.5
    assert torch.equal(TokenDropout(0.25, seed=5)(x), out)  # seeded
    assert not torch.equal(TokenDropout(0.25, seed=6)(x), out)
    with pytest.raises(ValueError):
        TokenDropout(0.0, seed=0)


def test_cross_entropy_with_token_dropout_sees_the_dropped_ids():
    import torch.nn.functional as F

    from mhsa_cli.train import TokenDropout, cross_entropy_loss

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(20, 3), torch.nn.Flatten(), torch.nn.Linear(15, 4))
    x, y = torch.randint(2, 20, (8, 5)), torch.randint(0, 4, (8,))
    loss, logits = cross_entropy_loss(0.0, token_dropout=TokenDropout(0.5, seed=1))(model, x, y)
    dropped = TokenDropout(0.5, seed=1)(x)  # the same draw
    assert not torch.equal(dropped, x) and torch.allclose(logits, model(dropped))
    assert loss.item() == pytest.approx(F.cross_entropy(model(dropped), y).item())


def test_train_text_with_token_dropout_is_reproducible_and_changes_the_result(tmp_path):
    from mhsa_cli.config import TrainConfig, build_config

    from .test_tasks import corpus, write_rows

    data = write_rows(tmp_path / "data.csv", corpus())

    def run(name, **values):
        train(build_config(TrainConfig, {"data": data, "epochs": 2, "d_model": 16, "heads": 2, "d_ff": 16,
                                         "out": str(tmp_path / name), "threads": 1, **values}))
        return weights(tmp_path / name)

    a, b, off = run("a"), run("b"), run("off", token_dropout=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], off[k]) for k in a)
    assert load_checkpoint(tmp_path / "a").meta["config"]["token_dropout"] == 0.1  # the text default, recorded


@pytest.mark.parametrize("args, message", [
    (["--task", "order", "--token-dropout", "0.1"], "only the text task has, not 'order'"),
    (["--init", "runs/none", "--token-dropout", "0.1"], "an --init checkpoint's tokenizer"),
])
def test_token_dropout_refused_outside_the_text_task(tmp_path, args, message):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["train", *args, "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


def test_train_with_mixup_on_digits_is_reproducible_and_changes_the_result(tmp_path):
    from mhsa_cli.config import TrainConfig, build_config

    def run(name, **values):
        train(build_config(TrainConfig, {"task": "digits", "epochs": 2, "d_model": 16, "heads": 2, "d_ff": 16,
                                         "out": str(tmp_path / name), "threads": 1, **values}))
        return weights(tmp_path / name)

    a, b, plain = run("a", mixup=1.0), run("b", mixup=1.0), run("plain")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], plain[k]) for k in a)
    assert load_checkpoint(tmp_path / "a").meta["config"]["mixup"] == 1.0


def test_mixup_refused_on_token_tasks(tmp_path):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app

    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["train", "--task", "order", "--mixup", "1", "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "mixes input features" in lines[0] and "token ids" in lines[0]
    assert not out.exists()


def test_chance_level_and_band():
    from mhsa_cli.tasks import Split
    from mhsa_cli.train import at_chance, chance_level

    split = Split(torch.zeros(10, 3, dtype=torch.long), torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2]))
    assert chance_level(split) == 0.4  # the most common label's share
    # 600 samples at chance 1/6: two standard errors = 2 * sqrt(1/6 * 5/6 / 600) = 0.0304
    assert at_chance(0.19, 1 / 6, 600) and not at_chance(0.20, 1 / 6, 600)
    assert at_chance(0.05, 1 / 6, 600)  # below chance is on the plateau too


def test_plateau_note_is_logged_once_while_at_chance(monkeypatch):
    """Epochs at chance: one note, naming the task's reason; none once the model has left it."""
    import mhsa_cli.train as T
    from mhsa_cli.tasks import load_task

    data = load_task("order", seed=0, **TINY_TASK)
    accs = iter([0.17, 0.16, 0.95, 0.99])
    monkeypatch.setattr(T, "evaluate", lambda model, split, device="cpu": next(accs))

    class Log(T.Progress):
        lines: list = []

        def log(self, message):
            self.lines.append(message)

    log = Log()
    model = torch.nn.Sequential(torch.nn.Embedding(data.vocab_size, 4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * data.max_len, data.num_classes))
    T.fit(model, data, T.LoopConfig(epochs=4, batch_size=64, lr=1e-3), progress=log)
    notes = [line for line in log.lines if line.startswith("note:")]
    assert len(notes) == 1 and "chance level" in notes[0] and "normal for the `order` task" in notes[0]
    assert log.lines.index(notes[0]) == 1  # right after epoch 1's line
    assert T.plateau_note("digits", 0.1).startswith("note: validation accuracy is still at chance level (10.0%)")
    assert "lower --lr" in T.plateau_note("digits", 0.1)


# ---------------------------------------------------------------- length-aware batching
def _ragged_split(n=40, T=20, seed=0):
    from mhsa_cli.tasks import Split

    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (n,), generator=gen)
    x = torch.randint(2, 30, (n, T), generator=gen)
    x[torch.arange(T)[None, :] >= lengths[:, None]] = 0
    return Split(x, torch.randint(0, 3, (n,), generator=gen), ragged=True), lengths


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "meanmax"])
@pytest.mark.parametrize("explicit", [False, True])
def test_logits_same_padded_to_own_length_or_max_len(pooling, explicit):
    """Both attention paths (SDPA and the explicit one with probabilities)."""
    from mhsa_cli.model import build_model, make_config

    split, lengths = _ragged_split()
    model = build_model(make_config("tokens", 20, 3, 30, 0, 2, 32, 4, 64, 0.0, pooling), seed=0).eval()
    run = (lambda x: model(x, features=True, output_attentions=True).logits) if explicit else model
    with torch.no_grad():
        full = run(split.x)  # every row padded to max_len 20
        for i in range(len(split)):
            own = run(split.x[i: i + 1, : int(lengths[i])])  # no padding at all
            assert torch.allclose(own, full[i: i + 1], atol=1e-5), (i, (own - full[i]).abs().max())
        cut, _ = split.rows(torch.arange(len(split)))  # the batch cut to its longest row
        assert cut.shape[1] == int(lengths.max())
        assert torch.allclose(run(cut), full, atol=1e-5)


def test_split_lengths_and_rows_cut_to_the_longest_row():
    split, lengths = _ragged_split()
    assert torch.equal(split.lengths, lengths)
    idx = torch.tensor([3, 5, 7])
    x, y = split.rows(idx)
    assert x.shape == (3, int(lengths[idx].max())) and torch.equal(y, split.y[idx])
    assert torch.equal(x, split.x[idx, : x.shape[1]]) and int(split.x[idx, x.shape[1]:].abs().sum()) == 0
    split.ragged = False
    assert split.rows(idx)[0].shape == (3, 20)  # fixed-shape tasks keep full rows


def test_bucketed_batches_cover_every_row_once_are_seeded_and_shorter():
    from mhsa_cli.train import BUCKET_CHUNK, batch_index

    split, lengths = _ragged_split(n=500, T=20)
    plain = batch_index(split, 8, shuffle=True, seed=1, epoch=1, bucket=False)
    bucketed = batch_index(split, 8, shuffle=True, seed=1, epoch=1)
    assert len(bucketed) == len(plain) == 63
    assert sorted(torch.cat(bucketed).tolist()) == list(range(500))
    assert all(torch.equal(a, b) for a, b in zip(bucketed, batch_index(split, 8, shuffle=True, seed=1, epoch=1)))
    assert not all(torch.equal(a, b) for a, b in zip(bucketed, batch_index(split, 8, shuffle=True, seed=1, epoch=2)))
    padded = lambda bs: sum(len(b) * int(lengths[b].max()) for b in bs)  # token slots computed
    assert padded(bucketed) < 0.75 * padded(plain)
    # each window of BUCKET_CHUNK batches was sorted by length: a batch spans few lengths
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in bucketed) / len(bucketed)
    assert spread <= 2 and BUCKET_CHUNK > 1


def test_predict_logits_keeps_row_order_and_evaluate_agrees():
    from mhsa_cli.model import build_model, make_config
    from mhsa_cli.train import evaluate, predict_logits

    split, _ = _ragged_split(n=50)
    model = build_model(make_config("tokens", 20, 3, 30, 0, 1, 32, 4, 64, 0.0, "cls"), seed=0)
    logits = predict_logits(model, split, batch_size=7)
    with torch.no_grad():
        ref = model.eval()(split.x)
    assert torch.allclose(logits, ref, atol=1e-5)
    assert evaluate(model, split, batch_size=7) == pytest.approx(float((ref.argmax(-1) == split.y).float().mean()))


def test_warmup_then_linear_schedule():
    """BERT's fine-tuning schedule: 10 warm-up steps to 1, then linear to 0 over the remaining 90."""
    f = lr_lambda(100, 0.1, "linear")
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == 0.0
    assert f(64) == pytest.approx(1 - 54 / 90)
