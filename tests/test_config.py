"""config.py: one schema for CLI and recipes; clear errors."""

from __future__ import annotations

import pytest

from mhsa_cli.config import (BenchConfig, PruneConfig, TrainConfig, build_config, load_yaml,
                             parse_assignments)
from mhsa_cli.errors import MhsaError


def test_defaults_and_coercion():
    cfg = build_config(TrainConfig, {"epochs": "3", "lr": 1, "amp": "yes", "task_options": ["n_train=50"]})
    assert cfg.epochs == 3 and cfg.lr == 1.0 and cfg.amp is True and cfg.task_options == {"n_train": 50}
    b = build_config(BenchConfig, {"checkpoints": ["a"], "batch_sizes": "1,8", "devices": "cpu"})
    assert b.batch_sizes == [1, 8] and b.devices == ["cpu"]


@pytest.mark.parametrize("values,msg", [
    ({"epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
    ({"epochs": 0}, "'epochs' must be >= 1"),
    ({"epochs": 1.5}, "must be an integer"),
    ({"lr": 0}, "'lr' must be > 0"),
    ({"dropout": 1.0}, "'dropout' must be < 1.0"),
    ({"batch_size": -1}, "'batch_size' must be >= 1"),
    ({"task": "ordr"}, "unknown value 'ordr' (did you mean 'order'?)"),
    ({"pooling": "attention"}, "choose from: cls, mean, max, meanmax"),
    ({"amp": "maybe"}, "true or false"),
    ({"d_model": 30}, "divisible"),
])
def test_bad_values_are_one_line_errors(values, msg):
    with pytest.raises(MhsaError) as exc:
        build_config(TrainConfig, values)
    assert msg in str(exc.value) and "\n" not in str(exc.value)


def test_list_items_are_range_checked():
    with pytest.raises(MhsaError, match="'batch_sizes' must be >= 1"):
        build_config(BenchConfig, {"checkpoints": ["a"], "batch_sizes": "1,0"})
    with pytest.raises(MhsaError, match="'sweep' must be < 1.0"):
        build_config(PruneConfig, {"checkpoint": "a", "sweep": [0.5, 1.0]})


def test_data_option_selects_the_text_task():
    cfg = build_config(TrainConfig, {"data": "x.csv"})
    assert cfg.task == "text" and cfg.task_kwargs()["path"] == "x.csv"
    with pytest.raises(MhsaError, match="--data is for the text task"):
        build_config(TrainConfig, {"data": "x.csv", "task": "digits"})


def test_assignments_and_yaml_errors():
    assert parse_assignments(["a.b=1", "c=x", "d=[1, 2]"]) == {"a.b": 1, "c": "x", "d": [1, 2]}
    with pytest.raises(MhsaError, match="key=value"):
        parse_assignments(["novalue"])
    with pytest.raises(MhsaError, match=r"^r\.yaml:2:\d+: malformed YAML"):
        load_yaml("a: 1\nb: c: d\n", "r.yaml")


@pytest.mark.parametrize("args,fragment", [
    (["--lr", "nan"], "'lr' must be a finite number, got nan"),
    (["--lr", "inf"], "'lr' must be a finite number, got inf"),
    (["--lr", "1e6"], "'lr' must be <= 10.0"),
    (["--weight-decay", "-inf"], "'weight_decay' must be a finite number, got -inf"),
    (["--label-smoothing", "nan"], "'label_smoothing' must be a finite number"),
    (["--mixup", "nan"], "'mixup' must be a finite number"),
    (["--seed", str(2**70)], "'seed' must be <= 4294967295"),
    (["--d-model", "10000000"], "'d_model' must be <= 65536"),
    (["--batch-size", str(10**9)], "'batch_size' must be <= 1048576"),
    (["--threads", "100000"], "'threads' must be <= 4096"),
    (["--task-opt", "n_train=abc"], "order task: option 'n_train' must be an integer, got 'abc'"),
    (["--task-opt", "n_train=1e12"], "order task: option 'n_train' must be <= 1e+06"),
    (["--task-opt", "seq_len=[1, 2]"], "order task: option 'seq_len' must be an integer, got [1, 2]"),
])
def test_non_finite_and_absurd_numbers_are_refused_in_validation(tmp_path, args, fragment):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app
    from tests.conftest import assert_one_line_error

    result = CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path / "out")])
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_non_finite_numbers_in_a_recipe_or_set_are_refused():
    from mhsa_cli.config import DistillConfig

    for raw in ("nan", ".nan", ".inf", "-.inf", "1e999"):  # YAML reads all but the first as floats
        value = parse_assignments([f"temperature={raw}"])["temperature"]
        with pytest.raises(MhsaError, match="'temperature' must be a finite number"):
            build_config(DistillConfig, {"temperature": value})


def test_text_and_quickstart_train_defaults_are_pinned():
    """Text defaults chosen on trec's validation split (README "Defaults for text"); order keeps the quickstart's."""
    from mhsa_cli.tasks.text import DEFAULTS

    text = build_config(TrainConfig, {"data": "train.csv"})
    assert text.task == "text"
    shape = ("layers", "d_model", "heads", "d_ff", "dropout", "pooling")
    assert tuple(getattr(text, k) for k in shape) == (1, 64, 4, 128, 0.3, "meanmax")
    assert (text.epochs, text.batch_size, text.lr, text.weight_decay, text.patience) == (30, 32, 3e-3, 0.01, 5)
    assert text.token_dropout == 0.1 and DEFAULTS["min_freq"] == 2
    order = build_config(TrainConfig, {})
    assert tuple(getattr(order, k) for k in shape) == (2, 256, 8, 512, 0.0, "cls")
    assert (order.epochs, order.batch_size, order.lr, order.patience, order.token_dropout) == (8, 64, 1e-3, 0, 0.0)
    assert build_config(TrainConfig, {"data": "train.csv", "token_dropout": 0}).token_dropout == 0.0
