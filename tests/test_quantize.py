"""mhsa_cli.quantize: every Linear int8, bounded error, exact save -> load without pickle,
engines, pruned models, sizes, and the ``mhsa quantize`` command's bad inputs."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from mhsa_cli import quantize as Q
from mhsa_cli.checkpoint import META, WEIGHTS, load_checkpoint, load_model, make_meta, save_model, size_on_disk
from mhsa_cli.cli import app
from mhsa_cli.config import QuantizeConfig, build_config
from mhsa_cli.errors import MhsaError, MhsaWarning
from mhsa_cli.model import ModelConfig, build_model
from mhsa_cli.quantize import engines
from mhsa_cli.quantize.torch_private import weight_bias
from mhsa_cli.tasks import load_task

from .conftest import SMALL_MODEL, TINY_TASK, assert_one_line_error, tiny_train_config

TASK = TINY_TASK
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quantize")


@pytest.fixture(scope="module")
def base(root) -> Path:
    """A trained float checkpoint: 2 layers, d=64, 4 heads (the tool's default before d=256)."""
    from mhsa_cli.train import train

    out = root / "base"
    train(tiny_train_config(out, **SMALL_MODEL))
    return out


@pytest.fixture(scope="module")
def pruned(root) -> Path:
    """A float checkpoint shaped like a pruned one: heads [2, 0] (layer 1 has no q/k/v/o)."""
    data = load_task("order", seed=0, **TASK)
    cfg = ModelConfig("tokens", data.max_len, data.num_classes, vocab_size=data.vocab_size, d_model=64,
                      heads=[2, 0], head_dim=16, d_ff=128)
    model = build_model(cfg, seed=0)
    with torch.no_grad():
        model.blocks[1].attn.o_bias.normal_(0, 0.1)
    out = root / "pruned"
    save_model(out, model.eval(), make_meta("float", cfg, data.spec, "prune", {"ratio": 0.75}, {}))
    return out


def run_quantize(src: Path, out: Path, **options):
    options.setdefault("latency_time", 0.05)  # the quick latency check, kept short in tests
    return Q.quantize(build_config(QuantizeConfig, {"checkpoint": str(src), "out": str(out), **options}))


@pytest.fixture(scope="module")
def int8(base, root):
    return run_quantize(base, root / "int8")


@pytest.fixture(scope="module")
def int8_pc(base, root):
    return run_quantize(base, root / "int8-pc", per_channel=True, engine="fbgemm", classifier=False, threads=1,
                        latency_time=0, embeddings=False)


def inputs(n: int = 64) -> torch.Tensor:
    return load_task("order", seed=0, **TASK).test.x[:n]


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


# --------------------------------------------------------------------------- library

def test_every_linear_is_quantized(base, int8, int8_pc):
    float_model = load_model(base)
    linears = [n for n, m in float_model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 6 + 1  # q, k, v, o, ff1, ff2 per layer + classifier
    assert sorted(int8.quantized_modules) == sorted(linears)
    q = load_model(Path(int8.out))
    assert not [n for n, m in q.named_modules() if type(m) is nn.Linear]
    assert sorted(Q.BACKENDS["torch-ao"].quantized_names(q)) == sorted(linears)
    kept = {p["name"]: p["type"] for p in int8.float_modules}
    assert "embed" not in kept and kept["ln_f"] == "LayerNorm" and kept["pos"] == "Parameter"
    assert int8.quantized_embeddings == ["embed"] and type(q.embed) is Q.Int8Embedding
    assert {p["name"]: p["type"] for p in int8_pc.float_modules}["embed"] == "Embedding"  # --no-embeddings
    assert int8_pc.quantized_embeddings == [] and type(load_model(Path(int8_pc.out)).embed) is nn.Embedding
    assert {"pos", "cls", "blocks.0.ln1", "blocks.1.ln2"} <= set(kept)
    assert int8.int8_fraction == pytest.approx(int8.params_int8 / (int8.params_int8 + int8.params_float))
    assert 0.9 < int8.int8_fraction < 1.0


def test_int8_logits_close_to_float(base, int8):
    x = inputs()
    ref, got = logits(load_model(base), x), logits(load_model(Path(int8.out)), x)
    err = (got - ref).abs().max().item()
    assert err <= 0.1 * ref.abs().max().item() + 0.05, err  # bounded: a few % of the logit scale
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


@pytest.mark.parametrize("which", ["int8", "int8_pc"])
def test_save_load_gives_identical_int8_logits(base, which, request):
    result = request.getfixturevalue(which)
    q = Q.BACKENDS["torch-ao"].quantize(load_model(base), result.engine, result.per_channel,
                                        result.quantized_modules, tuple(result.quantized_embeddings))
    x = inputs()
    assert torch.equal(logits(load_model(Path(result.out)), x), logits(q, x))


@pytest.mark.parametrize("which", ["int8", "int8_pc"])
def test_lean_int8_linear_equals_torch_ao_module(base, which, request):
    """Quantize and load give the lean module; its output equals torch.ao's own forward bitwise."""
    result = request.getfixturevalue(which)
    lean = Q.lean_linear_type()
    fresh = Q.BACKENDS["torch-ao"].quantize(load_model(base), result.engine, result.per_channel,
                                            result.quantized_modules)
    loaded = load_model(Path(result.out))
    for model in (fresh, loaded):
        assert {type(model.get_submodule(n)) for n in result.quantized_modules} == {lean}
    ao_type = lean.__mro__[1]  # torch.ao.nn.quantized.dynamic.Linear
    with Q.use_engine(result.engine), torch.inference_mode():
        for n in result.quantized_modules:
            m = loaded.get_submodule(n)
            ao = ao_type(m.in_features, m.out_features, dtype=torch.qint8)
            ao.set_weight_bias(*weight_bias(m))
            inp = torch.randn(3, 25, m.in_features)
            assert torch.equal(m(inp), ao(inp)), n


def test_per_channel_and_classifier_flags_have_effect(int8, int8_pc):
    t = load_checkpoint(int8_pc.out).tensors
    assert t["blocks.0.ff1.weight_scale"].shape == (128,)  # one scale per output channel
    assert load_checkpoint(int8.out).tensors["blocks.0.ff1.weight_scale"].shape == (1,)
    assert "head" not in int8_pc.quantized_modules and "head" in int8.quantized_modules
    assert {"name": "head", "type": "Linear", "params": 64 * 6 + 6} in int8_pc.float_modules
    assert t["head.weight"].dtype == torch.float32 and t["blocks.0.attn.q.weight"].dtype == torch.int8
    assert int8_pc.threads == 1 and load_checkpoint(int8_pc.out).meta["config"]["threads"] == 1


def test_stored_tensors_and_settings(int8):
    ckpt = load_checkpoint(int8.out)
    t = ckpt.tensors
    assert t["blocks.0.attn.q.weight"].dtype == torch.int8 and t["blocks.0.attn.q.weight"].shape == (64, 64)
    assert t["blocks.0.attn.q.weight_scale"].dtype == torch.float32
    assert t["blocks.0.attn.q.weight_zero_point"].dtype == torch.int64
    assert t["blocks.0.attn.q.bias"].dtype == torch.float32
    V, D = load_model(int8.source).embed.weight.shape
    assert t["embed.weight"].dtype == torch.int8 and t["embed.weight"].shape == (V, D)
    assert t["embed.weight_scale"].dtype == torch.float32 and t["embed.weight_scale"].shape == (V, 1)
    assert "embed.weight_zero_point" not in t  # symmetric: no zero point
    s = ckpt.meta["extra"]["quantization"]
    assert s["backend"] == "torch-ao" and s["per_channel"] is False and s["modules"] == int8.quantized_modules
    assert s["embeddings"] == ["embed"] and "embed" not in s["float_modules"]
    assert ckpt.meta["lineage"][-1]["operation"] == "quantize"
    assert ckpt.meta["lineage"][-1]["parent"] == int8.source
    m = ckpt.meta["metrics"]
    assert m["test_acc"] == int8.accuracy["test"]["int8"] and m["float_val_acc"] == int8.accuracy["val"]["float"]


def test_engine_recorded(int8, int8_pc):
    assert int8.engine_requested == "auto" and int8.engine == Q.resolve_engine("auto")
    for r in (int8, int8_pc):
        meta = load_checkpoint(r.out).meta
        assert meta["extra"]["quantization"]["engine"] == r.engine
        assert meta["environment"]["quantized_engine"] == r.engine
    assert int8_pc.engine == "fbgemm"


def test_auto_engine_rule(monkeypatch):
    monkeypatch.setattr(engines, "cpu_family", lambda: "x86")
    for supported, expected in ((["qnnpack", "onednn", "x86", "fbgemm"], "x86"),
                                (["qnnpack", "fbgemm"], "fbgemm"), (["qnnpack"], "qnnpack")):
        monkeypatch.setattr(engines, "supported_engines", lambda s=supported: s)
        assert Q.resolve_engine("auto") == expected
    monkeypatch.setattr(engines, "cpu_family", lambda: "arm")
    monkeypatch.setattr(engines, "supported_engines", lambda: ["onednn", "qnnpack"])
    assert Q.resolve_engine("auto") == "qnnpack"


def test_unknown_and_unsupported_engine(monkeypatch):
    with pytest.raises(MhsaError, match="unknown quantized engine 'fbgem'.*did you mean 'fbgemm'"):
        Q.resolve_engine("fbgem")
    monkeypatch.setattr(engines, "supported_engines", lambda: ["x86", "fbgemm"])
    with pytest.raises(MhsaError, match="'qnnpack' is not supported on this machine"):
        Q.resolve_engine("qnnpack")


def test_recorded_engine_missing_here_falls_back_with_a_warning(int8, monkeypatch):
    monkeypatch.setattr(engines, "supported_engines", lambda: ["onednn"])
    with pytest.warns(MhsaWarning, match="packed for quantized engine 'x86'.*using 'onednn'"):
        q = load_model(Path(int8.out))  # recorded: x86
    assert q.quantization["engine"] == "onednn" and q.quantization["engine_recorded"] == "x86"
    monkeypatch.undo()
    ref = load_model(Path(int8.out))
    assert "engine_recorded" not in ref.quantization
    # Same stored int8 weights; the engines may round an activation differently, so
    # each output may move by at most one activation quantum per input feature:
    # |dy_j| <= s_x * sum_i |W_ji|, s_x = (max(x, 0) - min(x, 0)) / 127 (reduce_range).
    x = inputs()
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, a, y, n=n: seen.update({n: a[0]}))
             for n, m in ref.named_modules() if n in ref.quantization["modules"]]
    logits(ref, x)
    for h in hooks:
        h.remove()
    assert sorted(seen) == sorted(ref.quantization["modules"])
    for name, a in seen.items():
        with torch.no_grad():
            y_ref, y_fb = ref.get_submodule(name)(a), q.get_submodule(name)(a)
        w = ref.get_submodule(name).weight().dequantize()  # (out, in)
        s_x = (max(a.max().item(), 0.0) - min(a.min().item(), 0.0)) / 127
        bound = s_x * w.abs().sum(dim=1) + 1e-5  # (out,)
        assert ((y_fb - y_ref).abs() <= bound).all(), name


def test_bench_names_the_engine_after_a_fallback():
    from mhsa_cli.bench.command import engine_label

    assert engine_label(None) is None
    assert engine_label({"engine": "x86"}) == "x86"
    assert engine_label({"engine": "onednn", "engine_recorded": "x86"}) == "onednn (recorded x86: not supported here)"


def test_size_ratio(base, int8):
    assert int8.size_bytes_float == size_on_disk(base)
    assert int8.size_bytes_int8 == size_on_disk(int8.out)
    assert load_checkpoint(int8.out).meta["metrics"]["size_bytes"] == int8.size_bytes_int8
    assert int8.size_ratio < 0.32  # 96% of parameters int8; positions, norms, biases float
    assert int8.weight_bytes_int8 < 0.30 * int8.weight_bytes_float
    # the embedding table as int8: 1 byte per value instead of 4, plus one float32 scale per row
    V, D = load_model(base).embed.weight.shape
    without = Q.BACKENDS["torch-ao"].quantize(load_model(base), int8.engine, False, int8.quantized_modules)
    assert Q.model_weight_bytes(without) - int8.weight_bytes_int8 == 3 * V * D - 4 * V


def test_weight_bytes_and_fraction_of_float_and_int8_models(base, int8):
    float_model, q = load_model(base), load_model(Path(int8.out))
    assert Q.int8_fraction(float_model) == 0.0
    assert Q.model_weight_bytes(float_model) == sum(p.numel() * 4 for p in float_model.parameters())
    assert Q.model_weight_bytes(q) == int8.weight_bytes_int8
    assert Q.int8_fraction(q) == pytest.approx(int8.int8_fraction)


def test_pruned_then_quantized(pruned, root):
    result = run_quantize(pruned, root / "pruned-int8")
    assert len(result.quantized_modules) == 4 + 2 + 2 + 1  # layer 0: q k v o ff; layer 1: ff only
    assert not any(n.startswith("blocks.1.attn.") for n in result.quantized_modules)
    assert {"name": "blocks.1.attn.o_bias", "type": "Parameter", "params": 64} in result.float_modules
    q = load_model(Path(result.out))
    assert q.heads == [2, 0] and load_checkpoint(result.out).model_config.heads == [2, 0]
    x = inputs()
    ref, got = logits(load_model(pruned), x), logits(q, x)
    assert (got - ref).abs().max().item() <= 0.1 * ref.abs().max().item() + 0.05
    again = Q.BACKENDS["torch-ao"].quantize(load_model(pruned), result.engine, False, result.quantized_modules,
                                            tuple(result.quantized_embeddings))
    assert torch.equal(got, logits(again, x))


def test_no_deprecation_warnings_reach_users(base, int8, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_quantize(base, tmp_path / "q")
        logits(load_model(Path(int8.out)), inputs(4))
    assert not [w for w in caught if "quantiz" in str(w.message).lower()], [str(w.message) for w in caught]


def test_config_choices_come_from_the_registries():
    import dataclasses

    fields = {f.name: f.metadata for f in dataclasses.fields(QuantizeConfig)}
    assert list(fields["engine"]["choices"]) == list(Q.ENGINES)
    assert list(fields["backend"]["choices"]) == list(Q.BACKENDS)


# --------------------------------------------------------------------------- load path safety

class _Boom:
    """Unpickling this writes a marker file: proof that pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_load_path_never_unpickles(int8, tmp_path, monkeypatch):
    import shutil

    ckpt_dir = tmp_path / "planted"
    shutil.copytree(int8.out, ckpt_dir)
    marker = tmp_path / "pwned.txt"
    for name in ("pytorch_model.bin", "model.pt", "model.pkl"):  # planted beside the real weights
        (ckpt_dir / name).write_bytes(pickle.dumps(_Boom(marker)))

    def refuse(*args, **kwargs):
        raise AssertionError("pickle / torch.load used on the load path")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    q = load_model(ckpt_dir)
    assert Q.backend_of(q) is not None and not marker.exists()
    # a pickle in place of the safetensors weights: refused as corrupt, never executed
    (ckpt_dir / WEIGHTS).write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(MhsaError, match="corrupt"):
        load_model(ckpt_dir)
    assert not marker.exists()


def _tampered(src: str, dst: Path, change) -> Path:
    """Copy an int8 checkpoint, rewriting its tensors or JSON with ``change(tensors, meta)``."""
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    tensors = load_file(str(Path(src) / WEIGHTS))
    meta = json.loads((Path(src) / META).read_text())
    change(tensors, meta)
    save_file(tensors, str(dst / WEIGHTS))
    (dst / META).write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("change, message", [
    (lambda t, m: t.pop("blocks.0.attn.q.weight_scale"), "missing blocks.0.attn.q.weight_scale"),
    (lambda t, m: t.__setitem__("blocks.0.ff1.weight", t["blocks.0.ff1.weight"].float()),
     r"blocks.0.ff1.weight: file \(128, 64\) torch.float32, JSON \(128, 64\) torch.int8"),
    (lambda t, m: t.__setitem__("head.weight_scale", -t["head.weight_scale"]), "scales must be > 0"),
    (lambda t, m: t.__setitem__("ln_f.weight", torch.full((64,), float("nan"))), "weight ln_f.weight holds 64 NaN/Inf values"),
    (lambda t, m: t.__setitem__("extra.weight", torch.zeros(1)), "unexpected extra.weight"),
    (lambda t, m: m["extra"].pop("quantization"), "no extra.quantization"),
    (lambda t, m: m["extra"]["quantization"].__setitem__("modules", ["blocks.0.ln1"]), "not a Linear"),
    (lambda t, m: t.__setitem__("embed.weight", t["embed.weight"].float()),
     r"embed.weight: file \(16, 64\) torch.float32, JSON \(16, 64\) torch.int8"),
    (lambda t, m: t.pop("embed.weight_scale"), "missing embed.weight_scale"),
    (lambda t, m: t.__setitem__("embed.weight_scale", -t["embed.weight_scale"]), "embed.weight_scale: scales must be > 0"),
    (lambda t, m: m["extra"]["quantization"].__setitem__("embeddings", ["ln_f"]), "'ln_f' is not an Embedding"),
    (lambda t, m: m["extra"]["quantization"].__setitem__("embeddings", "embed"), "embeddings is missing or invalid"),
])
def test_corrupt_int8_checkpoint_is_one_line(int8, tmp_path, change, message):
    path = _tampered(int8.out, tmp_path / "bad", change)
    with pytest.raises(MhsaError, match=message) as exc:
        load_model(path)
    assert "\n" not in str(exc.value)


def test_int8_checkpoint_without_int8_tables_still_loads(base, int8, tmp_path):
    """A checkpoint written before int8 tables (float embed.weight, no ``embeddings`` key) loads as
    it was made: float table, the same logits as quantizing the Linear layers alone."""
    float_table = load_model(base).embed.weight.detach().clone()

    def older(t, m):
        t["embed.weight"] = float_table
        t.pop("embed.weight_scale")
        m["extra"]["quantization"].pop("embeddings")

    path = _tampered(int8.out, tmp_path / "old", older)
    q = load_model(path)
    assert type(q.embed) is nn.Embedding and torch.equal(q.embed.weight, float_table)
    ref = Q.BACKENDS["torch-ao"].quantize(load_model(base), int8.engine, False, int8.quantized_modules)
    assert torch.equal(logits(q, inputs()), logits(ref, inputs()))


# --------------------------------------------------------------------------- CLI

def cli(*args):
    return runner.invoke(app, ["quantize", *map(str, args)])


def assert_nothing_written(out: Path):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_cli_quantize_info_and_help(base, tmp_path):
    out = tmp_path / "q"
    result = cli(base, "--out", out, "--engine", "x86", "--per-channel")
    assert result.exit_code == 0, result.output
    for needle in ("x86", "per channel", "int8 parameters", "on disk", "LayerNorm", "Embedding", "test"):
        assert needle in result.output, needle
    assert load_checkpoint(out).meta["extra"]["quantization"]["per_channel"] is True
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "int8" in info.output, info.output
    assert "--per-channel" in runner.invoke(app, ["quantize", "--help"]).output


def test_cli_refuses_already_quantized(int8, tmp_path):
    out = tmp_path / "again"
    assert_one_line_error(cli(int8.out, "--out", out), "already quantized")
    assert_nothing_written(out)


def test_cli_unknown_engine(base, tmp_path):
    out = tmp_path / "q"
    assert_one_line_error(cli(base, "--out", out, "--engine", "avx"), "engine", "x86")
    assert_nothing_written(out)


def test_cli_unsupported_engine(base, tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "supported_engines", lambda: ["x86", "fbgemm"])
    out = tmp_path / "q"
    assert_one_line_error(cli(base, "--out", out, "--engine", "qnnpack"), "not supported on this machine")
    assert_nothing_written(out)


def test_cli_corrupt_and_missing_checkpoint(base, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(base, bad)
    data = (bad / WEIGHTS).read_bytes()
    (bad / WEIGHTS).write_bytes(data[: len(data) // 2])
    out = tmp_path / "q"
    assert_one_line_error(cli(bad, "--out", out), "corrupt")
    (bad / META).write_text("{not json")
    assert_one_line_error(cli(bad, "--out", out), "not valid JSON")
    assert_one_line_error(cli(tmp_path / "nope", "--out", out), "not found")
    assert_nothing_written(out)


def test_cli_existing_output_needs_force(base, int8, tmp_path):
    out = tmp_path / "q"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert_one_line_error(cli(base, "--out", out), "--force")
    assert (out / "keep.txt").exists()
    assert cli(base, "--out", out, "--force").exit_code == 0
    assert not (out / "keep.txt").exists() and load_checkpoint(out).kind == "int8"
    assert_one_line_error(cli(base, "--out", base, "--force"), "is the input")


def test_cli_bench_takes_an_int8_checkpoint(base, int8):
    result = runner.invoke(app, ["bench", str(base), int8.out, "--batch-sizes", "1", "--min-time", "0",
                                 "--min-repeats", "2", "--warmup", "0", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert Path(int8.out).name in result.output


def test_latency_check_times_float_and_int8(int8, int8_pc):
    assert sorted(int8.latency) == [1, 32]
    for v in int8.latency.values():
        assert v["float_ms"] > 0 and v["int8_ms"] > 0
        assert v["ratio"] == pytest.approx(v["int8_ms"] / v["float_ms"])
    stored = load_checkpoint(int8.out).meta["extra"]["latency_check"]
    assert stored["batches"] == {str(b): v for b, v in int8.latency.items()}
    assert int8_pc.latency == {}  # latency_time 0 skips it
    assert load_checkpoint(int8_pc.out).meta["extra"]["latency_check"]["batches"] == {}


def test_render_notes_when_int8_is_slower(int8):
    import dataclasses

    from rich.console import Console

    from mhsa_cli.report.quantize import render_quantize

    def rendered(ratios: dict[int, float]) -> str:
        latency = {b: {"float_ms": 1.0, "int8_ms": r, "ratio": r} for b, r in ratios.items()}
        console = Console(record=True, width=200)
        render_quantize(dataclasses.replace(int8, latency=latency), console)
        return console.export_text()

    text = rendered({1: 1.5, 32: 0.5})
    assert "int8 is slower than float here at batch 1," in text and "1.50" in text and "0.50" in text
    assert "slower" not in rendered({1: 0.6, 32: 0.5})
    assert "CPU latency" not in rendered({})


def test_quantize_without_data_leaves_accuracy_out_and_times_rows_from_the_checkpoint(tmp_path, monkeypatch):
    """A checkpoint without data (an import without --data) quantizes; accuracy is recorded as not
    measured, and the latency check times rows built from the checkpoint (probe_input)."""
    from mhsa_cli.model import probe_input

    from .test_export import no_data_ckpt

    src = no_data_ckpt(tmp_path / "c", load_task("order", seed=0, **TASK))
    timed = []
    import mhsa_cli.bench.timer as timer

    real = timer.measure_interleaved
    monkeypatch.setattr(timer, "measure_interleaved", lambda models, *a, **k: timed.append(
        next(iter(models.values()))[1]) or real(models, *a, **k))
    result = cli(src, "--out", tmp_path / "q", "--latency-time", "0.01")
    assert result.exit_code == 0, result.output
    assert "accuracy not measured (no data)" in result.output and "Accuracy" not in result.output
    meta = load_checkpoint(tmp_path / "q").meta
    assert meta["metrics"]["accuracy_not_measured"] == "no data" and "test_acc" not in meta["metrics"]
    assert meta["extra"]["latency_check"]["rows"] == "built from the checkpoint"
    float_model = load_model(src)
    assert [tuple(x.shape) for x in timed] == [(1, 24), (32, 24)]
    assert torch.equal(timed[1], probe_input(float_model, batch=32))
    x = probe_input(float_model, batch=32)
    ref, q = logits(float_model, x), logits(load_model(tmp_path / "q"), x)
    assert float((q - ref).abs().max()) < 0.1 * float(ref.abs().max()) + 0.05  # int8 close to float
