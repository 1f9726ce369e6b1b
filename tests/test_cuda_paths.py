"""CUDA paths exercised on the CPU: the device query, GPU count and CUDA events are mocked, so this
logic is tested on every machine (the gpu-marked tests run the real thing where a GPU exists)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mhsa_cli import distributed as dist
from mhsa_cli.cli import _group_device, app
from mhsa_cli.config import RecipeConfig
from mhsa_cli.distributed import group
from mhsa_cli.errors import MhsaError
from tests.conftest import assert_one_line_error

RECIPE = """\
name: r
defaults: {{device: {device}}}
stages:
  - name: base
    type: train
    epochs: 1
    task_options: {{n_train: 50, n_val: 20, n_test: 20}}
  - name: int8
    type: quantize
    from: base
"""


@pytest.fixture()
def gpus(monkeypatch):
    """Pretend this machine has ``n`` CUDA GPUs (set ``gpus.n``)."""
    class Fake:
        n = 8

    monkeypatch.setattr(torch.cuda, "is_available", lambda: Fake.n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: Fake.n)
    return Fake


@pytest.fixture()
def torchrun_env(monkeypatch):
    """The variables torchrun sets for rank 0 of 2 processes on one node."""
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)


@pytest.fixture()
def no_group(monkeypatch):
    """init_process_group records its backend instead of starting anything."""
    calls = []
    monkeypatch.setattr(group.tdist, "is_initialized", lambda: False)
    monkeypatch.setattr(group.tdist, "init_process_group", lambda backend, **kw: calls.append(backend))
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(f"set_device({i})"))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    return calls


@pytest.mark.parametrize("device,expected", [("cpu", "cpu"), ("auto", "cuda"), ("cuda", "cuda")])
def test_run_sets_up_its_group_for_the_recipes_device(tmp_path, monkeypatch, gpus, torchrun_env, device,
                                                      expected):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(device=device))
    seen = []
    monkeypatch.setattr(group, "setup", lambda device_type: seen.append(device_type) or False)
    with dist.launched("run", _group_device("run", RecipeConfig, {"recipe": str(path)})):
        pass
    assert seen == [expected]  # a CPU recipe gets gloo even where GPUs exist


def test_a_bad_recipe_under_torchrun_is_one_uniform_error(tmp_path, torchrun_env):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(device="cpu").replace("epochs", "epoch"))
    with pytest.raises(dist.UniformError, match="unknown key 'epoch'"):
        with dist.launched("run", _group_device("run", RecipeConfig, {"recipe": str(path)})):
            pass


def test_setup_picks_gloo_for_cpu_and_nccl_for_cuda(gpus, torchrun_env, no_group):
    assert group.setup("cpu") and no_group == ["gloo"]
    no_group.clear()
    assert group.setup("cuda") and no_group == ["set_device(0)", "cpu:gloo,cuda:nccl"]


@pytest.mark.parametrize("local_rank", ["0", "3"])  # rank 0 too: its GPU exists, but its peers' do not
def test_fewer_gpus_than_processes_is_refused_on_every_rank_before_any_collective(
        monkeypatch, gpus, torchrun_env, no_group, local_rank):
    gpus.n = 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    with pytest.raises(dist.UniformError, match="4 processes on this node need 4 CUDA GPUs .* but 2 are visible"):
        group.setup("cuda")
    assert no_group == []  # no group was started, nothing waits


def test_fewer_gpus_than_processes_is_one_line_from_the_cli(tmp_path, gpus, torchrun_env, no_group):
    gpus.n = 1
    result = CliRunner().invoke(app, ["train", "--device", "cuda", "--out", str(tmp_path / "out")])
    assert_one_line_error(result, "2 processes on this node need 2 CUDA GPUs (one each), but 1 is visible")
    assert not (tmp_path / "out").exists() and no_group == []


# ---------------------------------------------------------------- head removal: tolerance by arithmetic

@pytest.mark.parametrize("dtype,device,precision,expected", [
    (torch.float32, "cpu", "highest", 1e-5),
    (torch.float64, "cpu", "highest", 1e-5),
    (torch.float32, "cuda", "highest", 1e-5),  # 16 float32 epsilons are below 1e-5
    (torch.float32, "cuda", "high", 16 * 2 ** -10),  # TF32 matmuls: 10-bit mantissa
    (torch.float32, "cuda", "medium", 16 * 2 ** -7),  # bf16 matmuls
    (torch.float32, "cpu", "high", 1e-5),  # the CPU has no TF32
    (torch.bfloat16, "cuda", "highest", 16 * 2 ** -7),
    (torch.float16, "cuda", "highest", 16 * 2 ** -10),
])
def test_head_removal_tolerance_follows_dtype_and_device(monkeypatch, dtype, device, precision, expected):
    from mhsa_cli.prune import gap_tolerance

    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: precision)
    assert gap_tolerance(dtype, device) == pytest.approx(expected)
    assert gap_tolerance(dtype, device, scale=50.0) == pytest.approx(50 * expected)  # relative to the logits
    assert gap_tolerance(dtype, device, scale=0.01) == pytest.approx(expected)


# ---------------------------------------------------------------- CudaClock

def test_cuda_clock_records_its_events_on_the_timed_device(monkeypatch):
    from mhsa_cli.bench import CudaClock

    log = []

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self, stream=None):
            log.append(("record", stream))

        def synchronize(self):
            log.append(("event sync",))

        def elapsed_time(self, other):
            return 2.5

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(("sync", str(device))))
    clock = CudaClock(torch.device("cuda:1"))
    assert clock.time_ms(lambda: log.append(("call",))) == 2.5
    assert log == [("sync", "cuda:1"), ("record", "stream of cuda:1"), ("call",), ("record", "stream of cuda:1"),
                   ("event sync",)]


# ---------------------------------------------------------------- --amp

@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_amp_where_it_would_do_nothing_is_refused(tmp_path, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["train", "--amp", "--device", device, "--out", str(tmp_path / "out")])
    assert_one_line_error(result, "--amp (bf16 autocast) is for CUDA; on cpu it would change nothing")
    assert not (tmp_path / "out").exists()


def test_the_checkpoint_records_the_precision_training_ran_in(tiny_ckpt):
    meta = json.loads((tiny_ckpt / "checkpoint.json").read_text())
    assert meta["metrics"]["precision"] == "float32" and meta["config"]["amp"] is False


def test_commands_that_need_a_float_checkpoint_refuse_int8_by_kind(tmp_path, tiny_ckpt):
    from mhsa_cli.checkpoint import load_checkpoint
    from tests.conftest import make_int8

    int8 = load_checkpoint(make_int8(tiny_ckpt, tmp_path / "int8"))
    with pytest.raises(MhsaError, match=f"^cannot distill from {int8.path}: it is an int8 checkpoint; use the float"):
        int8.require_kind("float", "distill from", "use the float teacher")
    load_checkpoint(tiny_ckpt).require_kind("float", "prune")  # no error
