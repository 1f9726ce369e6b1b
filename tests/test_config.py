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
    ({"pooling": "max"}, "choose from: cls, mean"),
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
