"""interrupts.py: SIGINT / SIGTERM mid-command end in one line (exit 128 + signal), leave no
temporary file or folder and no partial output, and a rerun works.

Each case runs the real CLI in a subprocess whose named function sends the signal to its own
process when first called (a SIGTERM would end pytest itself without the fix)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mhsa_cli.interrupts import interruptible

ROOT = Path(__file__).resolve().parents[1]
DRIVER = """
import importlib, os, signal, sys
if sys.argv[1] != "-":
    module, attr, sig = sys.argv[1].rsplit(".", 2)
    def killed(*a, **k):
        os.kill(os.getpid(), getattr(signal, sig))
    setattr(importlib.import_module(module), attr, killed)
sys.argv = ["mhsa", *sys.argv[2:]]
from mhsa_cli.cli import main
main()
"""


def run_killed(target: str, *args) -> subprocess.CompletedProcess:
    """Run ``mhsa ARGS``; ``target`` = ``module.function.SIGNAL``: that function sends SIGNAL instead
    (``-``: nothing patched)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", DRIVER, target, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)


def assert_interrupted(proc, name: str, code: int) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr
    errors = [line for line in lines if line.startswith("error:")]  # progress log lines may precede it
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert errors[0].startswith(f"error: interrupted ({name})"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_sigterm_during_export_leaves_no_hidden_folder_and_a_rerun_works(tiny_ckpt, tmp_path):
    out = tmp_path / "onnx"
    proc = run_killed("mhsa_cli.export.command._checks.SIGTERM", "export", tiny_ckpt, "--out", out, "--threads", 1)
    assert_interrupted(proc, "SIGTERM", 143)
    assert list(tmp_path.iterdir()) == []  # no .onnx.tmp-PID folder beside --out
    proc = run_killed("-", "export", tiny_ckpt, "--out", out, "--threads", 1)
    assert proc.returncode == 0, proc.stderr
    assert (out / "export.json").is_file()


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupted_train_says_so_and_writes_nothing(tmp_path, sig, code):
    out = tmp_path / "run"
    proc = run_killed(f"mhsa_cli.train._epoch.{sig}", "train", "--out", out, "--epochs", 1, "--d-model", 16,
                      "--heads", 2, "--d-ff", 16, "--task-opt", "n_train=60", "--task-opt", "n_val=20",
                      "--task-opt", "n_test=20", "--device", "cpu")
    assert_interrupted(proc, sig, code)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_distill_says_so_and_writes_nothing(tiny_ckpt, tmp_path):
    proc = run_killed("mhsa_cli.distill.command.train_student.SIGINT", "distill", "--teacher", tiny_ckpt,
                      "--shrink", "half", "--epochs", 1, "--device", "cpu", "--out", tmp_path / "student")
    assert_interrupted(proc, "SIGINT", 130)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_predict_leaves_no_partial_file(tmp_path):
    from .test_predict import write_csv
    from .conftest import tiny_train_config
    from mhsa_cli.train import train

    data = write_csv(tmp_path / "train.csv", 60)
    train(tiny_train_config(tmp_path / "m", task="text", task_options={"path": data}, epochs=1))
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_killed("mhsa_cli.predict.command._predict_chunk.SIGTERM", "predict", tmp_path / "m", "--data", data,
                      "--out", tmp_path / "p.csv")
    assert_interrupted(proc, "SIGTERM", 143)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # neither p.csv nor .p.csv.*.tmp


def test_handlers_are_restored_and_a_repeated_signal_waits_for_the_clean_up():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interruptible() as got:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # ignored: the clean-up below still runs
                cleaned.append(True)
    assert got == {"signal": signal.SIGTERM} and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before
