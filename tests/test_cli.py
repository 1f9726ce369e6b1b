"""cli.py: help of every command, the foundation commands, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mhsa_cli.cli import app

from .conftest import TINY_TASK, assert_one_line_error

runner = CliRunner()
COMMANDS = ["train", "prune", "quantize", "distill", "export", "bench", "predict", "run", "import", "info", "tasks"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_root_help_lists_every_command_and_version():
    result = invoke("--help")
    assert result.exit_code == 0
    for c in COMMANDS:
        assert c in result.output
    assert invoke("--version").output.strip().startswith("mhsa ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


def test_train_help_states_the_text_defaults():
    import re

    text = re.sub(r"[\s│]+", " ", invoke("train", "--help").output)  # rich wraps lines in boxes
    for fragment in ("1 layer, d_model 64", "dropout 0.3", "word dropout 0.1", "min_freq=2", "patience 5"):
        assert fragment in text, fragment


def test_train_info_tasks(tmp_path):
    out = tmp_path / "b"
    opts = [a for k, v in TINY_TASK.items() for a in ("--task-opt", f"{k}={v}")]
    result = invoke("train", "--epochs", 1, "--d-model", 16, "--heads", 2, "--device", "cpu", "--out", out, *opts)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["model"]["heads"] == [2, 2] and meta["task"]["n_train"] == 300
    assert meta["config"]["epochs"] == 1 and meta["config"]["seed"] == 0
    info = invoke("info", out)
    assert info.exit_code == 0 and "heads per layer" in info.output and "Lineage" in info.output
    tasks = invoke("tasks")
    assert tasks.exit_code == 0 and all(t in tasks.output for t in ("order", "digits", "text"))
    assert "classes" in tasks.output and "1,797" in tasks.output  # sizes and classes listed


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("make_args,fragments", [
    (lambda p: ["--task", "nope"], ["unknown value 'nope'"]),
    (lambda p: ["--data", p / "missing.csv"], ["missing.csv"]),
    (lambda p: ["--data", write(p / "d.csv", "text,lab\na,1\nb,2\n"), "--task-opt", "label_column=label"],
     ["label"]),
    (lambda p: ["--data", write(p / "one.csv", "text,label\n" + "".join(f"w{i},x\n" for i in range(30)))],
     ["class"]),
    (lambda p: ["--data", write(p / "empty.csv", "")], ["empty"]),
    (lambda p: ["--d-model", 30, "--heads", 4], ["divisible"]),
    (lambda p: ["--layers", 0], ["'layers' must be >= 1"]),
    (lambda p: ["--epochs", -1], ["'epochs' must be >= 1"]),
    (lambda p: ["--batch-size", 0], ["'batch_size' must be >= 1"]),
    (lambda p: ["--lr", 0], ["'lr' must be > 0"]),
    (lambda p: ["--out", write(p / "file", "x")], ["is a file"]),
    (lambda p: ["--epochz", 3], ["No such option: --epochz"]),
])
def test_train_bad_input(tmp_path, make_args, fragments):
    args = make_args(tmp_path)
    if "--out" not in args:
        args += ["--out", tmp_path / "out"]
    result = invoke("train", *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_cuda_without_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_one_line_error(invoke("train", "--device", "cuda", "--out", tmp_path / "o"), "no CUDA GPU")
    assert not (tmp_path / "o").exists()


def test_existing_output_needs_force(tiny_ckpt):
    assert_one_line_error(invoke("train", "--out", tiny_ckpt), "--force")


@pytest.mark.parametrize("damage,fragment", [
    (lambda p: (p / "model.safetensors").unlink(), "missing model.safetensors"),
    (lambda p: (p / "checkpoint.json").write_text("{"), "not valid JSON"),
    (lambda p: (p / "model.safetensors").write_bytes(b"garbage"), "corrupt"),
])
def test_info_on_damaged_checkpoint(tmp_path, tiny_ckpt, damage, fragment):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(tiny_ckpt, copy)
    damage(copy)
    assert_one_line_error(invoke("info", copy), fragment)


def test_debug_flag_shows_traceback(tmp_path):
    result = invoke("--debug", "info", tmp_path / "missing")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_a_field_may_have_two_flag_names(tmp_path):
    """`mhsa distill --ff` (the issue's name) and `--d-ff` set the same field."""
    for flag in ("--ff", "--d-ff"):
        result = invoke("distill", "--teacher", tmp_path / "t", flag, 0, "--out", tmp_path / "s")
        assert_one_line_error(result, "'d_ff' must be >= 1")


def test_mhsa_warnings_are_one_line_on_stderr(capsys):
    import warnings as w

    from mhsa_cli.cli import _show_warning
    from mhsa_cli.errors import MhsaWarning

    _show_warning(w.WarningMessage("engine 'x86' not here", MhsaWarning, "f.py", 1).message,
                  MhsaWarning, "f.py", 1)
    assert capsys.readouterr().err == "warning: engine 'x86' not here\n"


def test_shell_completion_is_on():
    root = invoke("--help").output
    assert "--install-completion" in root and "--show-completion" in root
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="mhsa")
    assert script.exit_code == 0 and "complete -o default -F _mhsa_completion mhsa" in script.output


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_help_shows_plain_flags_and_usage(command):
    text = invoke(*command, "--help").output
    assert "<bool>" not in text  # a flag takes no value
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage


def test_usage_names_arguments_in_capitals():
    assert "[OPTIONS] CHECKPOINT " in next(l for l in invoke("info", "--help").output.splitlines() if "Usage:" in l) + " "
    assert "[OPTIONS] CHECKPOINTS..." in invoke("bench", "--help").output
    assert "[OPTIONS] RECIPE" in invoke("run", "--help").output


def test_distill_teacher_is_required():
    help_text = invoke("distill", "--help").output
    teacher_line = next(l for l in help_text.splitlines() if "--teacher" in l)
    assert "*" in teacher_line.split("--teacher")[0]  # the required mark
    assert "[required]" in help_text.split("--teacher")[1].split("--shrink")[0]
    assert_one_line_error(invoke("distill", "--out", "x"), "Missing option '--teacher'")
