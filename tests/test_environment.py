"""environment.py: busy-machine warning, measurement environment records."""

from __future__ import annotations

import os

import torch

from mhsa_cli import environment as E


def test_busy_warning_only_above_the_core_count(monkeypatch):
    assert E.busy_warning(threads=2, load=2.0, cores=2) is None  # fully used, not over
    assert E.busy_warning(threads=2, load=0.1, cores=2) is None
    msg = E.busy_warning(threads=2, load=7.14, cores=2)
    assert msg.startswith("warning: the machine is busy (load 7.1 on 2 cores)")
    assert "--threads 1" in msg and "\n" not in msg
    assert "--threads" not in E.busy_warning(threads=1, load=9.0, cores=2)  # already one thread
    assert "--threads 4" in E.busy_warning(threads=8, load=20.0, cores=8)


def test_busy_warning_reads_the_load_average(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 1.0, 1.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert "load 5.0 on 4 cores" in E.busy_warning(threads=2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.9, 9.0, 9.0))  # the 1-minute figure counts
    assert E.busy_warning(threads=2) is None

    def unsupported():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", unsupported)
    assert E.busy_warning() is None


def test_measurement_environment_names_what_timings_depend_on():
    env = E.measurement_environment(threads=0)
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["cpu"] == E.cpu_model() and env["cpu_count"] == os.cpu_count()
    assert set(env["cpu_flags"]) <= set(E.KERNEL_FLAGS)
    assert E.measurement_environment(threads=3)["threads"] == 3
    assert "gpu" not in E.measurement_environment(devices=["cpu"])


def test_changed_keys_lists_each_difference():
    assert E.changed_keys({"torch": "2.13", "threads": 2, "cpu": "x"}, {"torch": "2.14", "threads": 1, "cpu": "x"}) \
        == "torch 2.13 -> 2.14, threads 2 -> 1"
    assert E.changed_keys({}, {"gpu": "H100"}) == "gpu None -> H100"


def test_busy_warning_names_the_recipe_flag():
    msg = E.busy_warning(threads=2, load=5.0, cores=2, flag="--set defaults.threads={n}")
    assert "pass --set defaults.threads=1 " in msg
