"""export/: ONNX parity with torch per checkpoint kind, the int8 graph, export.json, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mhsa_cli.checkpoint import load_checkpoint, load_model, make_meta, save_model
from mhsa_cli.cli import app
from mhsa_cli.config import ExportConfig, QuantizeConfig, build_config
from mhsa_cli.errors import MhsaError
from mhsa_cli.export import INT8_OPS, export, op_counts
from mhsa_cli.model import make_config
from mhsa_cli.runtimes import load_runtime
from mhsa_cli.tasks import load_task

from .conftest import TINY_TASK, assert_one_line_error


def random_ckpt(out: Path, data, operation: str = "train", heads=(4, 4), d_model=32, head_dim=8, d_ff=64,
                seed=0, pooling="cls") -> Path:
    """A float checkpoint of ``data``'s task with random (not zero) weights everywhere,
    incl. biases and a 0-head layer's output bias, so parity is tested on every parameter."""
    cfg = make_config(data.input_kind, data.max_len, data.num_classes, data.vocab_size, data.feature_dim,
                      len(heads), d_model, 1, d_ff, 0.0, pooling)
    cfg.heads, cfg.head_dim = list(heads), head_dim
    torch.manual_seed(seed)
    from mhsa_cli.model import build_model

    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    meta = make_meta("float", cfg, data.spec, operation, {}, {"test_acc": 0.0})
    return save_model(out, model, meta)


def do_export(ckpt: Path, out: Path, **kw):
    """Export with ORT dynamic int8 alone unless asked (the gate's pick between variants depends on timing)."""
    kw = {"int8_methods": ["dynamic"], **kw}
    return export(build_config(ExportConfig, {"checkpoint": str(ckpt), "out": str(out), "threads": 1, **kw}))


@pytest.fixture(scope="module")
def order():
    return load_task("order", 0, **TINY_TASK)


def independent_gap(ckpt: Path, folder: Path, x: torch.Tensor) -> float:
    """Torch vs a plain InferenceSession on the folder's model.onnx (no mhsa runtime code)."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = load_model(ckpt)(x).numpy()
    return float(np.abs(s.run(None, {"input": x.numpy()})[0] - ref).max())


def test_pruned_with_zero_head_layer_and_student_parity(order, tmp_path):
    for name, kw in {"pruned": dict(operation="prune", heads=(3, 0)),
                     "student": dict(operation="distill", heads=(2,), d_model=16, d_ff=32)}.items():
        ckpt = random_ckpt(tmp_path / name, order, **kw)
        r = do_export(ckpt, tmp_path / f"{name}-onnx")
        assert r.parity["max_abs_gap"] <= 1e-4 and set(r.parity["max_abs_gap_by_case"]) == {
            "full_length", "half_length", "one_row"}
        # dynamic axes, checked independently: 7 rows of 11 tokens (neither was traced)
        assert independent_gap(ckpt, tmp_path / f"{name}-onnx", order.test.x[:7, :11]) <= 1e-4
        assert independent_gap(ckpt, tmp_path / f"{name}-onnx", order.test.x[:5]) <= 1e-4


def test_text_model_with_padded_rows(tmp_path):
    from .test_tasks import write_rows

    rows = [(" ".join(["good"] * (1 + i % 9) + [f"w{i % 13}"]), "pos" if i % 2 else "neg") for i in range(80)]
    path = write_rows(tmp_path / "t.csv", rows)
    data = load_task("text", 0, path=path, max_len=12)
    assert (data.test.x == 0).any() and (data.test.x[:, -1] == 0).any()  # real padding in the rows
    ckpt = random_ckpt(tmp_path / "text", data)
    r = do_export(ckpt, tmp_path / "text-onnx")
    assert r.parity["max_abs_gap"] <= 1e-4
    assert independent_gap(ckpt, tmp_path / "text-onnx", data.test.x) <= 1e-4
    # mean pooling weighs real tokens only (the padding mask reaches the pooling too)
    mean = random_ckpt(tmp_path / "text-mean", data, pooling="mean", heads=(2, 0))
    assert do_export(mean, tmp_path / "mean-onnx", int8=False).parity["max_abs_gap"] <= 1e-4
    assert independent_gap(mean, tmp_path / "mean-onnx", data.test.x) <= 1e-4
    meta = json.loads((tmp_path / "text-onnx" / "export.json").read_text())
    assert meta["task"]["tokenizer"] == data.spec["tokenizer"] and meta["input"]["padding_id"] == 0
    assert meta["labels"] == data.labels and meta["input"]["max_len"] == 12


def test_max_pooling_int8_at_opset_18_uses_onnx_shape_inference(order, tmp_path):
    """Opset 18's ReduceMax takes its axes as an input; ORT's symbolic shape inference (int8 pre-processing)
    fails on it, so ONNX's own inference is used, and said so; at opset 17 the symbolic one runs."""
    ckpt = random_ckpt(tmp_path / "m", order, pooling="meanmax")
    new = do_export(ckpt, tmp_path / "o18")
    old = do_export(ckpt, tmp_path / "o17", exporter="torchscript", opset=17)
    assert new.meta["quantization"]["pre_process"].startswith("quant_pre_process (ONNX shape inference only; ")
    assert old.meta["quantization"]["pre_process"] == "quant_pre_process (auto_merge)"
    ops = [op_counts(tmp_path / f / "model.int8.onnx") for f in ("o18", "o17")]
    assert ops[0]["MatMulInteger"] == ops[1]["MatMulInteger"] == 2 * 4 + 1 and ops[0]["ReduceMax"] == 1
    assert new.accuracy["ort_int8"] == pytest.approx(old.accuracy["ort_int8"], abs=0.02)


def test_digits_feature_model(tmp_path):
    pytest.importorskip("sklearn")
    data = load_task("digits", 0)
    ckpt = random_ckpt(tmp_path / "digits", data)
    r = do_export(ckpt, tmp_path / "digits-onnx", int8=False)
    assert r.parity["max_abs_gap"] <= 1e-4 and set(r.files) == {"fp32"}
    assert independent_gap(ckpt, tmp_path / "digits-onnx", data.test.x[:9]) <= 1e-4
    meta = json.loads((tmp_path / "digits-onnx" / "export.json").read_text())
    assert meta["input"]["kind"] == "features" and meta["input"]["dtype"] == "float32"
    assert meta["input"]["feature_dim"] == data.feature_dim and meta["input"]["padding_id"] is None


def test_int8_graph_has_integer_kernels_and_keeps_predictions(tiny_ckpt, tmp_path):
    import onnx

    r = do_export(tiny_ckpt, tmp_path / "e")
    counts = op_counts(tmp_path / "e" / "model.int8.onnx")
    assert all(counts.get(op, 0) >= 1 for op in INT8_OPS)
    # every Linear of a 2-layer cls model is an integer product: q|k|v (fused), o, ff1, ff2 in layer 1;
    # k|v (fused), q (the cls row alone), o, ff1, ff2 in layer 2; the classifier. The attention itself
    # (scores, probs @ v) stays float, one MultiHeadAttention node per layer
    assert counts["MatMulInteger"] == 4 + 5 + 1 and counts["Split"] == 2
    assert counts["MultiHeadAttention"] == 2 and "MatMul" not in counts
    g = onnx.load(str(tmp_path / "e" / "model.int8.onnx")).graph
    int8_weights = [i for i in g.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8_weights) == 10
    data = load_task("order", 0, **TINY_TASK)
    fp32 = load_runtime("onnxruntime", tmp_path / "e", "fp32", threads=1).call(data.test.x)
    int8 = load_runtime("onnxruntime", tmp_path / "e", "int8", threads=1).call(data.test.x)
    gap = float((fp32 - int8).abs().max())
    assert 0 < gap < 0.5  # really a different (integer) computation, close to fp32
    acc = r.accuracy
    assert acc["ort_fp32"] == acc["checkpoint"]  # same predictions in ORT fp32
    assert acc["ort_int8"] == pytest.approx(float((int8.argmax(-1) == data.test.y).float().mean()))


def test_export_json_describes_the_folder(tiny_ckpt, tmp_path):
    import onnx

    r = do_export(tiny_ckpt, tmp_path / "e", reduce_range=True)
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    src = load_checkpoint(tiny_ckpt)
    assert meta["source"]["id"] == src.meta["id"] and meta["source"]["lineage"] == src.meta["lineage"]
    assert meta["model"] == src.meta["model"] and meta["task"] == src.task_spec
    assert meta["quantization"]["reduce_range"] is True and meta["quantization"]["format"] == "QOperator"
    assert meta["exporter"]["exporter"] == "dynamo" and meta["exporter"]["dynamo"] is True  # the default
    opsets = {o.domain: o.version for o in onnx.load(str(tmp_path / "e" / "model.onnx")).opset_import}
    assert meta["exporter"]["opset"] == opsets[""] == 18 and opsets["com.microsoft"] == 1
    assert meta["input"]["dynamic_axes"] == {"batch": True, "sequence": True}
    assert {"torch", "onnx", "onnxruntime"} <= set(meta["environment"])
    assert meta["checks"]["parity"]["max_abs_gap"] == r.parity["max_abs_gap"] <= 1e-4
    assert meta["checks"]["test_acc"]["checkpoint"] == pytest.approx(src.meta["metrics"]["test_acc"])
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["export.json", "model.int8.onnx", "model.onnx"]


def test_torch_int8_checkpoint_refused_naming_parent(tiny_ckpt, tmp_path):
    from mhsa_cli.quantize import quantize

    q = tmp_path / "q"
    quantize(build_config(QuantizeConfig, {"checkpoint": str(tiny_ckpt), "out": str(q), "latency_time": 0}))
    with pytest.raises(MhsaError, match=f"torch-int8 checkpoint; export its float parent \\({tiny_ckpt}\\)"):
        do_export(q, tmp_path / "e")
    assert not (tmp_path / "e").exists()
    result = CliRunner().invoke(app, ["export", str(q), "--out", str(tmp_path / "e")])
    assert_one_line_error(result, "float parent")


def test_parity_failure_and_existing_out_write_nothing(tiny_ckpt, tmp_path):
    with pytest.raises(MhsaError, match="ORT fp32 vs torch .*: logits differ by up to .* nothing written"):
        do_export(tiny_ckpt, tmp_path / "e", tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "keep").write_text("x")
    result = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(tmp_path / "e")])
    assert_one_line_error(result, "already exists")
    assert (tmp_path / "e" / "keep").read_text() == "x"


def test_cli_flags_reach_the_files(tiny_ckpt, tmp_path):
    import onnx

    out = tmp_path / "e"
    result = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(out), "--no-int8", "--opset", "18",
                                      "--check-rows", "7", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "parity torch vs ORT fp32" in result.output and f"wrote: {out}" in result.output
    assert "dynamo (torch.export + onnxscript), opset 18" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx"]
    meta = json.loads((out / "export.json").read_text())
    assert set(meta["files"]) == {"fp32"} and meta["quantization"] is None
    assert meta["checks"]["parity"]["rows"] == 7 and meta["exporter"]["opset"] == 18
    assert {o.domain: o.version for o in onnx.load(str(out / "model.onnx")).opset_import}[""] == 18
    assert meta["config"]["threads"] == 1
    with pytest.raises(MhsaError, match="has no int8 model"):
        load_runtime("onnxruntime", out, "int8")
    # opset 21 is past the TorchScript exporter (it warned and went on), 17 below dynamo's (onnx's version
    # converter failed on Pad and wrote 18 as is): refused before any work
    for flags in (["--exporter", "torchscript", "--opset", "21"], ["--opset", "17"]):
        result = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(tmp_path / "o"), *flags])
        assert_one_line_error(result, f"--opset {flags[-1]} is outside the")
        assert not (tmp_path / "o").exists()


def test_per_channel_scales(tiny_ckpt, tmp_path):
    import onnx

    do_export(tiny_ckpt, tmp_path / "t")
    do_export(tiny_ckpt, tmp_path / "c", per_channel=True)
    assert json.loads((tmp_path / "c" / "export.json").read_text())["quantization"]["per_channel"] is True
    per_tensor = [i for i in onnx.load(str(tmp_path / "t" / "model.int8.onnx")).graph.initializer
                  if i.data_type == onnx.TensorProto.FLOAT and i.name.endswith("scale")]
    per_channel = [i for i in onnx.load(str(tmp_path / "c" / "model.int8.onnx")).graph.initializer
                   if i.data_type == onnx.TensorProto.FLOAT and i.name.endswith("scale")]
    assert all(list(i.dims) in ([], [1]) for i in per_tensor)
    assert any(len(i.dims) == 1 and i.dims[0] > 1 for i in per_channel)  # one scale per output channel


def test_unfused_qkv_same_logits_three_products(tiny_ckpt, tmp_path):
    fused = do_export(tiny_ckpt, tmp_path / "f")
    plain = do_export(tiny_ckpt, tmp_path / "p", fuse_qkv=False)
    assert fused.meta["exporter"]["fused_qkv_layers"] == 2 and plain.meta["exporter"]["fused_qkv_layers"] == 0
    counts = op_counts(tmp_path / "p" / "model.int8.onnx")
    assert counts["MatMulInteger"] == 2 * 6 + 1 and "Split" not in counts
    x = load_task("order", 0, **TINY_TASK).val.x
    a = load_runtime("onnxruntime", tmp_path / "f", "fp32", threads=1).call(x)
    b = load_runtime("onnxruntime", tmp_path / "p", "fp32", threads=1).call(x)
    assert float((a - b).abs().max()) <= 1e-6


def _product_shapes(path: Path) -> list[tuple[int, ...]]:
    """The weight shape of every MatMul with a constant weight in an fp32 graph (D, outputs)."""
    import onnx

    g = onnx.load(str(path)).graph
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    return sorted(inits[n.input[1]] for n in g.node if n.op_type == "MatMul" and n.input[1] in inits)


@pytest.mark.parametrize("attention", [True, False])
def test_qkv_stacked_at_trace_time_one_product_per_layer(order, tmp_path, attention):
    """q|k|v is one product in the traced module (no graph surgery by node name), with fused attention
    and with standard ops; the cls model's last block computes q for the cls row alone, k|v for all rows."""
    ckpt = random_ckpt(tmp_path / "m", order, operation="prune", heads=(3, 0, 2))  # d 32, head_dim 8
    r = do_export(ckpt, tmp_path / "f", int8=False, fuse_attention=attention)
    assert r.meta["exporter"]["fused_qkv_layers"] == 2
    shapes = _product_shapes(tmp_path / "f" / "model.onnx")
    assert (32, 3 * 24) in shapes and (32, 2 * 16) in shapes  # q|k|v of layer 1; k|v of layer 3
    assert shapes.count((32, 24)) == 0 and shapes.count((32, 16)) == 1  # layer 3's q (cls row) alone
    assert op_counts(tmp_path / "f" / "model.onnx")["Split"] == 2
    plain = do_export(ckpt, tmp_path / "p", int8=False, fuse_attention=attention, fuse_qkv=False)
    assert _product_shapes(tmp_path / "p" / "model.onnx").count((32, 24)) == 3
    assert plain.meta["exporter"]["fused_qkv_layers"] == 0
    x = order.test.x[:9, :13]
    assert independent_gap(ckpt, tmp_path / "f", x) <= 1e-4 and independent_gap(ckpt, tmp_path / "p", x) <= 1e-4


def _mha_nodes(path: Path) -> list:
    import onnx

    return [n for n in onnx.load(str(path)).graph.node if n.op_type == "MultiHeadAttention"]


def test_fused_attention_one_node_per_layer_with_heads_or_standard_ops(order, tmp_path):
    ckpt = random_ckpt(tmp_path / "pruned", order, operation="prune", heads=(3, 0, 2))
    fused = do_export(ckpt, tmp_path / "f")
    plain = do_export(ckpt, tmp_path / "p", fuse_attention=False)
    assert fused.meta["exporter"]["fused_attention_layers"] == 2
    assert plain.meta["exporter"]["fused_attention_layers"] == 0 and plain.meta["requires"] == {}
    nodes = _mha_nodes(tmp_path / "f" / "model.onnx")
    heads = [next(a.i for a in n.attribute if a.name == "num_heads") for n in nodes]
    assert heads == [3, 2] and all(n.domain == "com.microsoft" for n in nodes)
    assert len(_mha_nodes(tmp_path / "f" / "model.int8.onnx")) == 2
    import onnx

    for f in ("model.onnx", "model.int8.onnx"):  # standard ONNX only: no op outside the default domain
        g = onnx.load(str(tmp_path / "p" / f)).graph
        assert {n.domain for n in g.node} <= {"", "ai.onnx"}, f
    x = order.test.x[:9, :13]
    assert independent_gap(ckpt, tmp_path / "f", x) <= 1e-4 and independent_gap(ckpt, tmp_path / "p", x) <= 1e-4


@pytest.mark.parametrize("exporter, opset", [("torchscript", 14), ("dynamo", 20)])  # reductions change at 18
def test_all_padding_row_gives_torchs_answer_without_cls(tmp_path, exporter, opset):
    """Without a cls token a sample can be all padding: no key to attend. SDPA gives 0 there; the
    fused node alone would average every (masked) value, so the export multiplies by "any key"."""
    from .test_tasks import write_rows

    rows = [(" ".join(["good"] * (1 + i % 5) + [f"w{i % 7}"]), "pos" if i % 2 else "neg") for i in range(60)]
    data = load_task("text", 0, path=write_rows(tmp_path / "t.csv", rows), max_len=8)
    # first-token pooling: the row's output is its attention's (mean pooling over no token would be 0 anyway)
    ckpt = random_ckpt(tmp_path / "first", data, pooling="first", heads=(2, 2))
    do_export(ckpt, tmp_path / "e", opset=opset, exporter=exporter)  # int8: its pre-processing reads the guard
    x = data.test.x[:4].clone()
    x[1] = 0  # the padding id: a row with no real token
    assert len(_mha_nodes(tmp_path / "e" / "model.onnx")) == 2
    assert independent_gap(ckpt, tmp_path / "e", x) <= 1e-4
    # standard ops: the same answer (masked keys -10000, then times "any key")
    do_export(ckpt, tmp_path / "s", int8=False, opset=opset, exporter=exporter, fuse_attention=False)
    assert not _mha_nodes(tmp_path / "s" / "model.onnx") and independent_gap(ckpt, tmp_path / "s", x) <= 1e-4


def test_dynamo_and_torchscript_exporters_give_the_same_graph(order, tmp_path):
    """Both exporters: one MultiHeadAttention node per layer with heads, q|k|v one product, the same logits
    and int8 products; dynamo's graph has fewer nodes (no Constant nodes), ORT's optimised one at most one
    more (it computes "sequence + 1" for the position rows from the input's shape)."""
    ckpt = random_ckpt(tmp_path / "m", order, operation="prune", heads=(3, 0, 2))
    runs = {name: do_export(ckpt, tmp_path / name, exporter=name) for name in ("dynamo", "torchscript")}
    for name, r in runs.items():
        assert r.meta["exporter"]["exporter"] == name and r.meta["exporter"]["dynamo"] is (name == "dynamo")
        assert r.meta["exporter"]["fused_attention_layers"] == r.meta["exporter"]["fused_qkv_layers"] == 2
        assert [next(a.i for a in n.attribute if a.name == "num_heads")
                for n in _mha_nodes(tmp_path / name / "model.onnx")] == [3, 2]
        assert independent_gap(ckpt, tmp_path / name, order.test.x[:9, :13]) <= 1e-4
    dyn, ts = (runs[n].files for n in ("dynamo", "torchscript"))
    assert _product_shapes(tmp_path / "dynamo" / "model.onnx") == _product_shapes(tmp_path / "torchscript" / "model.onnx")
    # q|k|v, o, ff1, ff2; ff1, ff2 (0 heads); q (cls row), k|v, o, ff1, ff2; the classifier
    assert dyn["int8"]["ops"]["MatMulInteger"] == ts["int8"]["ops"]["MatMulInteger"] == 4 + 2 + 5 + 1
    assert sum(dyn["fp32"]["ops"].values()) < sum(ts["fp32"]["ops"].values()) and "Constant" not in dyn["fp32"]["ops"]
    for precision in ("fp32", "int8"):
        assert sum(dyn[precision]["optimized_ops"].values()) <= sum(ts[precision]["optimized_ops"].values()) + 1
    x = order.test.x
    a = load_runtime("onnxruntime", tmp_path / "dynamo", "int8", threads=1).call(x)
    b = load_runtime("onnxruntime", tmp_path / "torchscript", "int8", threads=1).call(x)
    assert float((a - b).abs().max()) <= 1e-4  # the same integer products


def test_dynamo_without_onnxscript_names_the_fix(tiny_ckpt, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    result = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(tmp_path / "e")])
    assert_one_line_error(result, "pip install onnxscript", "--exporter torchscript")
    assert not (tmp_path / "e").exists()


def test_export_leaves_the_model_in_eval_mode(order, tmp_path):
    """The exporter restores the traced wrapper's mode recursively: a wrapper left in its default
    (training) mode switched the model's dropout on after export (parity then failed for BERT)."""
    from mhsa_cli.export import to_onnx
    from mhsa_cli.export.command import tracing_input

    model = load_model(random_ckpt(tmp_path / "m", order))
    to_onnx(model, tracing_input(model), tmp_path / "m.onnx", 17)
    assert not any(m.training for m in model.modules())


def _fake_ort(monkeypatch, ckpt: Path, logits):
    """The ORT runtime's call replaced by ``logits(torch_model, x)``: what a broken runtime returns."""
    from mhsa_cli.runtimes.onnxruntime import OrtCall

    model = load_model(ckpt)
    monkeypatch.setattr(OrtCall, "__call__", lambda self, x: logits(model, x))


@pytest.mark.parametrize("broken, message", [
    (lambda m, x: m(x).masked_fill(torch.arange(m(x).shape[0])[:, None] == 1, float("nan")),
     "compared logits are not finite"),
    (lambda m, x: m(x)[:1], "where (8, "),  # (1, C) vs (B, C): broadcast, gap 0 on equal rows
])
def test_nan_or_broadcast_logits_fail_export(tiny_ckpt, tmp_path, monkeypatch, broken, message):
    _fake_ort(monkeypatch, tiny_ckpt, broken)
    with pytest.raises(MhsaError, match="ORT fp32 vs torch"):
        do_export(tiny_ckpt, tmp_path / "e", int8=False, check_rows=8, tolerance=1e9, exporter="torchscript")
    assert not (tmp_path / "e").exists()
    result = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(tmp_path / "e"), "--no-int8",
                                      "--check-rows", "8", "--tolerance", "1e9", "--threads", "1",
                                      "--exporter", "torchscript"])  # ORT is stubbed: the fast exporter
    assert_one_line_error(result, message, "nothing written")


def test_rtol_scales_with_each_logit(tiny_ckpt, tmp_path, monkeypatch):
    # ORT logits 0.1 % off torch's: |gap| = 1e-3 x |logit| exactly (up to float32 rounding)
    _fake_ort(monkeypatch, tiny_ckpt, lambda m, x: m(x) * 1.001)
    with pytest.raises(MhsaError, match="past atol 1e-12 \\+ rtol 0.0005"):
        do_export(tiny_ckpt, tmp_path / "a", int8=False, tolerance=1e-12, rtol=5e-4)
    out = tmp_path / "b"
    result = CliRunner().invoke(app, ["export", str(tiny_ckpt), "--out", str(out), "--no-int8", "--threads", "1",
                                      "--tolerance", "1e-12", "--rtol", "0.002"])
    assert result.exit_code == 0, result.output
    parity = json.loads((out / "export.json").read_text())["checks"]["parity"]
    assert parity["rtol"] == 0.002 and parity["tolerance"] == 1e-12
    data = load_task("order", 0, **TINY_TASK)
    with torch.inference_mode():
        biggest = float(load_model(tiny_ckpt)(data.val.x[:256]).abs().max())
    assert parity["max_abs_gap"] == pytest.approx(1e-3 * biggest, rel=1e-3)


# --------------------------------------------------------------------------- from the checkpoint alone

def no_data_labels(n: int) -> list[str]:
    """One distinct name per class (checkpoint.json's labels must name every class once)."""
    return (["no", "yes", "maybe"] + [f"class{i}" for i in range(3, n)])[:n]


def no_data_ckpt(out: Path, order, pad_id: int = 1) -> Path:
    """A float token checkpoint whose task spec holds no data (as `mhsa import FOLDER` without --data
    writes it): labels, padding id and input length only."""
    from types import SimpleNamespace

    from mhsa_cli.tasks.hf_text import data_spec

    spec = data_spec(None, pad_id, no_data_labels(order.num_classes), order.max_len)
    fake = SimpleNamespace(**{k: getattr(order, k) for k in ("input_kind", "max_len", "num_classes", "vocab_size",
                                                              "feature_dim")}, spec=spec)
    path = random_ckpt(out, fake)
    meta = json.loads((path / "checkpoint.json").read_text())
    meta["model"]["pad_id"] = pad_id  # RoBERTa-style padding id: 0 is a real token
    (path / "checkpoint.json").write_text(json.dumps(meta))
    return path


def test_export_without_data_checks_parity_on_rows_built_from_the_checkpoint(order, tmp_path):
    from mhsa_cli.model import probe_input

    ckpt = no_data_ckpt(tmp_path / "c", order)
    result = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "e"), "--check-rows", "16",
                                      "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "not measured (no data)" in result.output and "on 16 rows built from" in result.output
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    checks = meta["checks"]
    assert checks["test_acc"] is None and checks["test_acc_not_measured"] == "no data"
    assert checks["parity"]["split"] == "probe" and checks["parity"]["rows"] == 16
    assert meta["labels"] == no_data_labels(order.num_classes) and meta["input"]["padding_id"] == 1
    x = probe_input(load_model(ckpt), batch=16)  # the rows it checked: padded with id 1, varied lengths
    assert (x == 1).any() and len(set((x != 1).sum(1).tolist())) > 3
    assert independent_gap(ckpt, tmp_path / "e", x) <= 1e-4
    assert load_runtime("onnxruntime", tmp_path / "e", "int8").precision == "int8"
    gate = meta["int8_gate"]  # no validation rows: no gate, dynamic int8 kept, static (calibrated) not made
    assert gate["skipped"] == "no data" and gate["chosen"] == "dynamic" and list(gate["not_made"]) == ["static"]
    assert meta["quantization"]["method"] == "dynamic" and "int8 gate skipped (no data)" in result.output
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["export.json", "model.int8.onnx", "model.onnx"]


def test_export_after_the_data_file_is_gone_notes_accuracy_not_measured(tmp_path):
    """A checkpoint copied to another machine, without its CSV: exported, accuracy noted as not measured."""
    from .test_tasks import write_rows

    rows = [(" ".join(["good"] * (1 + i % 9) + [f"w{i % 13}"]), "pos" if i % 2 else "neg") for i in range(80)]
    data = load_task("text", 0, path=write_rows(tmp_path / "t.csv", rows), max_len=12)
    ckpt = random_ckpt(tmp_path / "text", data)
    (tmp_path / "t.csv").unlink()
    r = do_export(ckpt, tmp_path / "e", int8=False, check_rows=8)
    assert r.accuracy == {} and r.parity["split"] == "probe" and r.parity["max_abs_gap"] <= 1e-4
    why = json.loads((tmp_path / "e" / "export.json").read_text())["checks"]["test_acc_not_measured"]
    assert why.startswith("no data: data file ") and "t.csv not found" in why
    assert any("test accuracy not measured" in n and "t.csv not found" in n for n in r.notes)
    assert r.meta["labels"] == data.labels and r.meta["task"]["tokenizer"] == data.spec["tokenizer"]


def test_export_loads_its_folder_through_the_runtime_registry(tiny_ckpt, tmp_path, monkeypatch):
    """The checks load the written folder as bench and predict do: the registry's onnxruntime
    version guard refuses fused attention on 1.20 (nothing written); standard ops pass."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "__version__", "1.20.1")
    with pytest.raises(MhsaError, match="computes wrongly"):
        do_export(tiny_ckpt, tmp_path / "fused", int8=False)
    assert not (tmp_path / "fused").exists()
    r = do_export(tiny_ckpt, tmp_path / "plain", int8=False, fuse_attention=False)
    assert r.parity["max_abs_gap"] <= 1e-4 and r.meta["requires"] == {}


# --------------------------------------------------------------------------- int8 variants and the quality gate


def test_gate_keeps_the_fastest_variant_within_max_drop(monkeypatch):
    """Accuracies 100 / 99 / 97 % (fp32 / static / dynamic); dynamic is faster. The gate keeps dynamic
    when 3 points may go, static when 1.5, nothing when 0.5; 'speed' is the geometric mean of the p50s."""
    from mhsa_cli.export import int8

    wrong = {"fp32": [], "static": [5], "dynamic": [5, 6, 7]}  # of 100 rows: 100 / 99 / 97 %
    monkeypatch.setattr(int8, "_correct", lambda call, split: torch.tensor([i not in wrong[call] for i in range(100)]))
    monkeypatch.setattr(int8, "_latency", lambda calls, split, threads, t: {
        "static": {1: 0.4, 32: 4.0}, "dynamic": {1: 0.1, 32: 1.0}})
    calls = {"static": "static", "dynamic": "dynamic"}
    for max_drop, chosen in ((3.0, "dynamic"), (1.5, "static"), (0.5, None)):
        g = int8.gate(calls, "fp32", split=None, max_drop=max_drop, threads=1)
        assert g["chosen"] == chosen, max_drop
    assert g["variants"]["static"]["drop_pts"] == pytest.approx(1.0)
    assert g["variants"]["dynamic"]["speed"] == pytest.approx((0.1 * 1.0) ** 0.5)
    assert "ship fp32" in g["why"] and "static: -1.00 pts (rows +0/-1)" in g["why"]
    assert (g["variants"]["dynamic"]["paired"]["gained"], g["variants"]["dynamic"]["paired"]["lost"]) == (0, 3)


def test_static_variant_is_qdq_calibrated_on_validation_rows_and_gated(tiny_ckpt, tmp_path, monkeypatch):
    """Both variants are made; calibration sees validation rows only (never test); the kept file is the
    chosen variant's, byte for byte, and export.json records both measurements."""
    from mhsa_cli.export import int8
    from mhsa_cli.hashing import file_sha256

    seen, real = [], int8.quantize_static_qdq

    def spy(src, dst, batches, per_channel, **kw):
        seen.extend(batches)
        out = real(src, dst, batches, per_channel, **kw)
        (tmp_path / "static.onnx").write_bytes(dst.read_bytes())
        return out

    monkeypatch.setattr(int8, "quantize_static_qdq", spy)
    real_gate = int8.gate
    monkeypatch.setattr(int8, "gate", lambda *a, **k: {**real_gate(*a, **k), "chosen": "static"})
    do_export(tiny_ckpt, tmp_path / "e", int8_methods=["dynamic", "static"])
    data = task_of(tiny_ckpt)
    assert np.array_equal(np.concatenate(seen), data.val.x[: len(np.concatenate(seen))].numpy())
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    gate = meta["int8_gate"]
    assert set(gate["variants"]) == {"dynamic", "static"} and gate["chosen"] == "static"
    assert meta["quantization"]["method"] == "static" and meta["quantization"]["format"] == "QDQ"
    assert file_sha256(tmp_path / "e" / "model.int8.onnx") == file_sha256(tmp_path / "static.onnx")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["export.json", "model.int8.onnx", "model.onnx"]
    counts = op_counts(tmp_path / "e" / "model.int8.onnx")
    assert counts.get("QuantizeLinear", 0) >= 1 and "MatMulInteger" not in counts


def test_no_variant_within_max_drop_ships_fp32_only(tiny_ckpt, tmp_path, monkeypatch):
    from mhsa_cli.export import int8

    real_gate = int8.gate
    monkeypatch.setattr(int8, "gate", lambda *a, **k: {**real_gate(*a, **k), "chosen": None, "why": "none: ship fp32"})
    r = do_export(tiny_ckpt, tmp_path / "e")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["export.json", "model.onnx"]
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    assert meta["quantization"] is None and "ort_int8" not in meta["checks"]["test_acc"] and "none: ship fp32" in r.notes


def test_the_gate_loads_every_variant_through_the_runtime_registry(tiny_ckpt, tmp_path, monkeypatch):
    """The gate's ORT calls are the registry's (hashes, signature, version guard), as the checks' are:
    fp32, dynamic and static int8 from a provisional export.json, then the kept files for the checks."""
    import mhsa_cli.runtimes as runtimes

    loaded, real = [], runtimes.load_runtime

    def spy(name, path, precision=None, threads=0, device="cpu"):
        loaded.append((name, precision))
        return real(name, path, precision, threads, device)

    monkeypatch.setattr(runtimes, "load_runtime", spy)
    r = do_export(tiny_ckpt, tmp_path / "e", int8_methods=["dynamic", "static"])
    assert sorted(loaded[:3]) == [("onnxruntime", p) for p in ("fp32", "int8", "int8-static")]
    kept = ["fp32", "int8"] if r.meta["int8_gate"]["chosen"] else ["fp32"]
    assert loaded[3:] == [("onnxruntime", p) for p in kept]


def task_of(ckpt):
    from mhsa_cli.tasks import task_from_spec

    return task_from_spec(load_checkpoint(ckpt).task_spec)


def test_out_that_holds_the_input_is_refused_even_with_force(tiny_ckpt, tmp_path):
    """--out DIR --force where DIR is or contains the checkpoint: one line, nothing lost or written."""
    import shutil

    holder = tmp_path / "holder"
    shutil.copytree(tiny_ckpt, holder / "ckpt")
    before = sorted(p.name for p in (holder / "ckpt").iterdir())
    for out, what in ((holder, "contains the input"), (holder / "ckpt", "is the input")):
        result = CliRunner().invoke(app, ["export", str(holder / "ckpt"), "--out", str(out), "--force"])
        assert_one_line_error(result, f"output folder {out} {what}")
        assert sorted(p.name for p in (holder / "ckpt").iterdir()) == before
        assert load_checkpoint(holder / "ckpt").meta["id"] == load_checkpoint(tiny_ckpt).meta["id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holder"]  # no temporary folder either
