"""Shared fixtures: tiny tasks and checkpoints (2 layers, d=32, a few hundred samples)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_TASK = {"n_train": 300, "n_val": 100, "n_test": 100}
# the former default model (the tool's default is now d=256): fast, and 4 heads per layer to prune
SMALL_MODEL = {"d_model": 64, "heads": 4, "d_ff": 128, "lr": 3e-3}


def tiny_train_config(out, **overrides):
    from mhsa_cli.config import TrainConfig, build_config

    values = {"out": str(out), "epochs": 2, "d_model": 32, "heads": 4, "d_ff": 64,
              "task_options": dict(TINY_TASK), "device": "cpu"}
    values.update(overrides)
    return build_config(TrainConfig, values)


def assert_one_line_error(result, *fragments):
    """A CliRunner result of bad input: exit code 2, one ``error:`` line holding ``fragments``, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (restored after): tiny models are fastest and steadiest
    that way, and on a busy 2-core machine two threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_int8(src, dst):
    """A real int8 checkpoint of float checkpoint ``src`` (what commands that need a float one must refuse).

    (A float checkpoint merely marked int8 in its JSON is now refused on load, as malformed.)
    """
    from mhsa_cli.config import QuantizeConfig, build_config
    from mhsa_cli.quantize import quantize

    quantize(build_config(QuantizeConfig, {"checkpoint": str(src), "out": str(dst), "latency_time": 0}))
    return dst


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A trained float checkpoint on a tiny `order` task (shared, read-only)."""
    from mhsa_cli.train import train

    out = tmp_path_factory.mktemp("ckpt") / "baseline"
    train(tiny_train_config(out))
    return out


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU present")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
