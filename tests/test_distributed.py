"""Tests for :mod:`mhsa_cli.distributed` and the DDP path of the training loop.

Fast tests check the pieces in one process (batch order, sampler shards, batch
size rule, refusal and error handling). The ``slow`` ones start real 2-process
gloo groups on the CPU: with ``torch.multiprocessing`` (library level: ranks
agree bit for bit, a distillation-style loss and a zero-head layer work, a rank
that dies does not hang its peer) and with ``torchrun`` (the CLI: checkpoint,
metrics, failure on bad input).

Why the tolerances: with ``n_train`` divisible by the global batch, each DDP step
sees exactly the samples of the one-process step, and the gradient is the same
mean computed in a different order (two half-batch means, averaged by the
all-reduce). Float32 rounding differs (~1e-7 relative per step) and AdamW
turns it into weight differences of ~1e-6 relative after a few dozen steps.
Measured here (16-32 steps): any tensor <= 1e-5 relative (norm), logits
<= 2.5e-6 absolute, epoch losses <= 3e-8 relative, accuracies equal.

One exception: the attention *key bias* has a gradient that is exactly zero in
exact arithmetic (a constant added to all scores of a query cancels in the
softmax), so what it gets is rounding noise, which Adam normalises into steps
of size ~lr in either direction. It differs between the runs (measured: 0.1-0.4 %
relative) yet cannot change any output; it is left out of the weight comparison
and covered by the logits check.

So, with margins of 10x or more for other thread counts and CPUs: weights
(except key biases) within 1e-4 relative (norm), logits within 1e-3 absolute,
losses within 1e-5 relative, validation/test accuracy and best epoch equal,
train accuracy within one sample.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mhsa_cli import distributed as dist
from mhsa_cli.errors import MhsaError
from mhsa_cli.tasks import Split, load_task

ROOT = Path(__file__).resolve().parents[1]
TINY = {"n_train": 256, "n_val": 96, "n_test": 96}
LOOP = dict(epochs=2, batch_size=32, lr=3e-3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference of two tensors (by norm)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def compare_states(a: dict, b: dict, rel: float = 1e-4) -> None:
    """All tensors within ``rel`` (norm), except the output-invariant attention key biases."""
    assert a.keys() == b.keys()
    worst = max((close(a[k], b[k]), k) for k in a if not k.endswith("attn.k.bias"))
    assert worst[0] < rel, worst


# --------------------------------------------------------------- one process

def test_single_process_batch_order_is_unchanged():
    """The DistributedSampler order in one process is the loop's historical order, bit for bit."""
    from mhsa_cli.train import batches

    n = 103
    split = Split(torch.arange(n)[:, None], torch.arange(n))
    for seed, epoch in ((0, 1), (7, 3)):
        legacy = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        got = torch.cat([y for _, y in batches(split, 10, shuffle=True, seed=seed, epoch=epoch)])
        assert torch.equal(got, legacy)
    assert torch.equal(torch.cat([y for _, y in batches(split, 10)]), torch.arange(n))


@pytest.mark.parametrize("n", [256, 250])
def test_two_shards_make_the_one_process_batches(n):
    """Rank shards of each global batch (global 32 = 2 x 16) are the one-process batch.

    Exactly so when n is divisible by the world size; otherwise the sampler pads.
    """
    one = dist.train_order(n, 5, 2, num_replicas=1, rank_=0)
    ranks = [dist.train_order(n, 5, 2, num_replicas=2, rank_=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == -(-n // 2)
    for start in range(0, n, 32):
        merged = torch.cat([r[start // 2: start // 2 + 16] for r in ranks])
        if start + 32 <= n:
            assert sorted(merged.tolist()) == sorted(one[start: start + 32].tolist())
    padded = torch.cat(ranks)
    assert set(padded.tolist()) == set(range(n)) and len(padded) - n == n % 2


def test_helpers_are_no_ops_in_one_process():
    assert not dist.is_distributed() and dist.world_size() == 1 and dist.is_main()
    assert dist.local_batch_size(33) == 33
    assert dist.all_reduce_sum(3) == 3 and dist.all_reduce_sum((1.5, 2)) == (1.5, 2)
    model = nn.Linear(2, 2)
    assert dist.wrap(model, torch.device("cpu")) is model
    assert dist.setup("cpu") is False  # no WORLD_SIZE
    with pytest.raises(MhsaError, match="boom") as info:
        dist.agree(lambda: (_ for _ in ()).throw(MhsaError("boom")))
    assert type(info.value) is MhsaError  # one process: the original error, untouched
    assert dist.agree(lambda a, b: a + b, 1, b=2) == 3


def test_launch_without_torchrun_variables_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(dist.UniformError, match="MASTER_ADDR.*torchrun"):
        dist.setup("cpu")


def test_only_training_commands_scale_out(monkeypatch):
    """Under torchrun, prune/quantize/bench refuse; rank 0 says why, the others exit quietly."""
    assert set(dist.SCALABLE) == {"train", "distill", "run"}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(dist.UniformError, match="`mhsa bench` runs in one process"):
        with dist.launched("bench"):
            pass
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as info:
        with dist.launched("quantize"):
            pass
    assert info.value.code == 2


def test_timeout_from_environment(monkeypatch):
    monkeypatch.delenv(dist.TIMEOUT_ENV, raising=False)
    assert dist.timeout_s() == dist.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(dist.TIMEOUT_ENV, "30")
    assert dist.timeout_s() == 30.0
    monkeypatch.setenv(dist.TIMEOUT_ENV, "soon")
    with pytest.raises(MhsaError, match="MHSA_DIST_TIMEOUT"):
        dist.timeout_s()


# --------------------------------------------------------------- 2 processes, library level

def _tiny_model(heads: list[int]):
    from mhsa_cli.model import ModelConfig, build_model

    data = load_task("order", seed=0, **TINY)
    cfg = ModelConfig("tokens", data.max_len, data.num_classes, data.vocab_size, 0, 32, heads, 8, 64)
    return data, build_model(cfg, seed=0)


def _distill_like_loss(proj: nn.Module):
    """A loss in the style of distill.py: keyword forward through DDP, hidden + attention terms."""

    def loss_fn(model, x, y):
        out = model(x, features=True, output_attentions=True)
        ce = F.cross_entropy(out.logits, y)
        hidden = F.mse_loss(proj(out.hidden_states[-1]), out.hidden_states[1].detach())
        attn = sum(a.pow(2).mean() for a in out.attentions if a is not None)
        return ce + 0.1 * hidden + 0.1 * attn, out.logits

    return loss_fn


def _scenarios() -> dict:
    """Run on every rank (or in one process): returns comparable results."""
    from mhsa_cli.train import LoopConfig, evaluate, fit

    res = {}
    data, model = _tiny_model([4, 4])
    fitted = fit(model, data, LoopConfig(**LOOP))
    res["ce"] = dict(history=fitted.history, best=fitted.best_epoch, state=model.state_dict(),
                     test_acc=evaluate(model, data.test), logits=model(data.test.x).detach())
    # distillation-style loss, a zero-head layer, extra (projection) parameters, fit twice
    data, model = _tiny_model([2, 0])
    torch.manual_seed(1)
    proj = nn.Linear(32, 32)
    for _ in range(2):
        fitted = fit(model, data, LoopConfig(**LOOP), loss_fn=_distill_like_loss(proj),
                     extra_params=list(proj.parameters()))
    res["kd"] = dict(history=fitted.history, best=fitted.best_epoch, state=model.state_dict(),
                     proj=proj.state_dict(), logits=model(data.test.x).detach())
    return res


def _worker(rank: int, world: int, port: int, out: str, mode: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    os.environ[dist.TIMEOUT_ENV] = "60"
    assert dist.setup("cpu")
    try:
        if mode == "crash":  # rank 1 dies in the middle of training; rank 0 must not hang
            from mhsa_cli.train import LoopConfig, cross_entropy_loss, fit

            data, model = _tiny_model([4, 4])
            ce, calls = cross_entropy_loss(), [0]

            def loss_fn(m, x, y):
                calls[0] += 1
                if rank == 1 and calls[0] == 3:
                    os._exit(3)
                return ce(m, x, y)

            fit(model, data, LoopConfig(**LOOP), loss_fn=loss_fn)
            return
        result: dict = {"world": dist.world_size(), "threads": torch.get_num_threads()}
        # bad input on rank 1 only: every rank raises the same one-line error
        try:
            dist.agree(lambda: (_ for _ in ()).throw(MhsaError("no such file")) if rank == 1 else 7)
        except dist.UniformError as exc:
            result["agree_error"] = str(exc)
        # evaluation shards are unpadded: 7 samples over 2 ranks -> 4 + 3, counted once
        split = Split(torch.arange(7)[:, None], torch.arange(7))
        from mhsa_cli.train import batches

        mine = torch.cat([y for _, y in batches(split, 2)])
        result["eval_total"] = dist.all_reduce_sum(len(mine))
        with dist.local():  # rank-0-only work inside a group: no sharding, no collectives
            result["local"] = (dist.world_size(), len(dist.shard(torch.arange(7))), dist.all_reduce_sum(5))
        result.update(_scenarios())
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.teardown()


@pytest.mark.slow
def test_fit_on_two_processes_agrees_and_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), "fit"), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world"] == 2 and r0["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert r0["agree_error"] == r1["agree_error"] == "rank 1: no such file"
    assert r0["eval_total"] == 7
    assert r0["local"] == r1["local"] == (1, 7, 5)
    for key in ("ce", "kd"):  # every rank holds the same model and the same metrics
        for name, t in r0[key]["state"].items():
            assert torch.equal(t, r1[key]["state"][name]), (key, name)
        assert r0[key]["history"] == [{**h, "seconds": r0[key]["history"][i]["seconds"]}
                                      for i, h in enumerate(r1[key]["history"])]
    for name, t in r0["kd"]["proj"].items():  # extra params are averaged like the model's
        assert torch.equal(t, r1["kd"]["proj"][name])

    one = _scenarios()  # the same global batch in one process
    for key in ("ce", "kd"):
        a, b = r0[key], one[key]
        assert a["best"] == b["best"]
        for ha, hb in zip(a["history"], b["history"]):
            assert ha["train_acc"] == pytest.approx(hb["train_acc"], abs=1 / TINY["n_train"] + 1e-12)
            assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5)
            assert ha["val_acc"] == hb["val_acc"]
        compare_states(a["state"], b["state"])
        assert (a["logits"] - b["logits"]).abs().max() < 1e-3
    assert r0["ce"]["test_acc"] == one["ce"]["test_acc"]
    compare_states(r0["kd"]["proj"], one["kd"]["proj"])


@pytest.mark.slow
def test_a_rank_that_dies_mid_training_does_not_hang_its_peer():
    """No torchrun here: gloo itself notices the closed connection (or the timeout ends it)."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, "", "crash")) for r in (0, 1)]
    start = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    alive = [p.is_alive() for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not any(alive), f"a rank hung ({time.monotonic() - start:.0f}s)"
    assert procs[1].exitcode == 3 and procs[0].exitcode != 0


# --------------------------------------------------------------- 2 processes, torchrun + CLI

def _cli(out: Path, nproc: int, *extra: str, timeout: float = 150) -> subprocess.CompletedProcess:
    args = ["--task-opt", f"n_train={TINY['n_train']}", "--task-opt", f"n_val={TINY['n_val']}",
            "--task-opt", f"n_test={TINY['n_test']}", "--epochs", "2", "--batch-size", "32",
            "--d-model", "32", "--d-ff", "64", "--device", "cpu", "--out", str(out), *extra]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                 "--master-port", str(free_port()), "-m", "mhsa_cli", "train"] if nproc > 1
                else [sys.executable, "-m", "mhsa_cli", "train"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(launcher + args, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow
def test_torchrun_train_matches_one_process_and_loads_plain(tmp_path):
    from mhsa_cli.checkpoint import load_checkpoint, load_model

    two = _cli(tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("Training") == 1  # only rank 0 renders the report
    one = _cli(tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-2000:]

    a, b = load_checkpoint(tmp_path / "two"), load_checkpoint(tmp_path / "one")
    assert a.meta["metrics"]["world_size"] == 2 and b.meta["metrics"]["world_size"] == 1
    assert a.meta["config"]["batch_size"] == 32
    assert not any(k.startswith("module.") for k in a.tensors)
    for key in ("val_acc", "test_acc", "best_epoch", "epochs_run"):
        assert a.meta["metrics"][key] == b.meta["metrics"][key], key
    for ha, hb in zip(a.meta["extra"]["history"], b.meta["extra"]["history"]):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5)
    compare_states(a.tensors, b.tensors)
    ma, mb = load_model(tmp_path / "two"), load_model(tmp_path / "one")  # a plain process loads it
    x = load_task("order", seed=0, **TINY).test.x
    with torch.no_grad():
        assert (ma(x) - mb(x)).abs().max() < 1e-3


@pytest.mark.slow
def test_torchrun_bad_input_fails_fast_with_one_line(tmp_path):
    """Rank 0 alone sees the existing output folder; every rank must stop, none may hang."""
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    start = time.monotonic()
    res = _cli(out, 2)
    elapsed = time.monotonic() - start
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: output folder {out} already exists; pass --force to replace it"]
    assert (out / "keep.txt").read_text() == "mine"
    assert elapsed < 60, elapsed


RECIPE = """\
name: ddp
defaults: {seed: 0, device: cpu}
stages:
  - name: base
    type: train
    epochs: 2
    batch_size: 32
    d_model: 32
    d_ff: 64
    task_options: {n_train: 256, n_val: 100, n_test: 100}
  - name: pruned
    type: prune
    from: base
    ratio: 0.5
  - name: student
    type: distill
    from: base
    epochs: 1
    batch_size: 32
  - name: bench
    type: bench
    compare: [base, pruned, student]
    batch_sizes: [2]
    min_time: 0.01
    min_repeats: 3
"""


@pytest.mark.slow
def test_torchrun_recipe_trains_on_all_ranks_and_writes_once(tmp_path):
    """`mhsa run` under torchrun: train/distill use both ranks, prune/bench run on rank 0 only."""
    recipe, out = tmp_path / "r.yaml", tmp_path / "out"
    recipe.write_text(RECIPE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "mhsa_cli", "run", str(recipe), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((out / "base" / "checkpoint.json").read_text())
    assert meta["metrics"]["world_size"] == 2
    assert json.loads((out / "student" / "checkpoint.json").read_text())["metrics"]["world_size"] == 2
    bench = json.loads((out / "bench.json").read_text())
    assert len(bench["rows"]) == 3
    log = (out / "run.log").read_text()
    assert log.count("[1/4] base (train): done") == 1  # one writer
    assert res.stdout.count("Recipe 'ddp'") == 1
