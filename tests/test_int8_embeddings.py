"""export/int8.py: large embedding tables stored as int8 rows with one scale each (weight-only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mhsa_cli.export import int8
from mhsa_cli.runtimes import load_runtime

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def gather_graph(path: Path, tables: dict[str, np.ndarray], tied: str | None = None) -> None:
    """ids (B, T) int64 -> one output per table: Gather(table, ids); ``tied`` is also read by a MatMul."""
    nodes, outputs = [], []
    for name, w in tables.items():
        nodes.append(helper.make_node("Gather", [name, "ids"], [f"{name}_rows"], name=f"g_{name}"))
        outputs.append(helper.make_tensor_value_info(f"{name}_rows", TensorProto.FLOAT, None))
    if tied:  # (B, T, D) @ table^T: the same weight as an output projection
        nodes += [helper.make_node("Transpose", [tied], ["tied_t"], perm=[1, 0]),
                  helper.make_node("MatMul", [f"{tied}_rows", "tied_t"], ["logits"])]
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
                              outputs, [numpy_helper.from_array(w, n) for n, w in tables.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def run(path: Path, ids: np.ndarray) -> list[np.ndarray]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"ids": ids})


def test_large_table_becomes_int8_rows_each_with_its_own_scale(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.normal(0, 0.05, (300, 256)).astype(np.float32)  # 76,800 values: over the threshold
    big[5] = 0.0  # an all-zero row keeps scale 1
    big[7] *= 40.0  # a row far larger than the rest: per-tensor scaling would crush every other row
    small = rng.normal(0, 1, (300, 2)).astype(np.float32)  # 600 values: under the threshold, stays float
    path = tmp_path / "m.onnx"
    gather_graph(path, {"big": big, "small": small})
    ids = np.array([[5, 7, 0, 299], [1, 2, 3, 7]], dtype=np.int64)
    before = run(path, ids)

    rec = int8.int8_embeddings(path)["embeddings"]

    scale = np.abs(big).max(axis=1, keepdims=True) / 127.0  # by hand, (300, 1)
    scale[5] = 1.0
    q = np.clip(np.rint(big / scale), -127, 127)
    big_out, small_out = run(path, ids)
    assert np.allclose(big_out, (q * scale)[ids], rtol=0, atol=1e-6)
    assert np.all(np.abs(big_out - big[ids]) <= scale[ids] / 2 + 1e-7)  # each row: at most half its own step
    assert np.all(big_out[0, 0] == 0.0)
    assert np.array_equal(small_out, before[1])  # the small table is untouched
    assert rec["tables"] == ["big"]
    assert rec["max_abs_error"] == pytest.approx(float(np.abs(q * scale - big).max()), rel=1e-5)
    inits = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    assert set(inits) == {"big_int8", "big_scale", "small"}
    assert inits["big_int8"].data_type == TensorProto.INT8 and list(inits["big_int8"].dims) == [300, 256]
    assert list(inits["big_scale"].dims) == [300, 1]
    assert path.stat().st_size < big.nbytes / 3  # 1 byte per value instead of 4


def test_a_tied_table_stays_float_and_the_file_unchanged(tmp_path):
    w = np.random.default_rng(1).normal(0, 1, (300, 256)).astype(np.float32)
    path = tmp_path / "m.onnx"
    gather_graph(path, {"emb": w}, tied="emb")
    raw = path.read_bytes()
    assert int8.int8_embeddings(path)["embeddings"]["tables"] == []
    assert path.read_bytes() == raw


@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_export_stores_the_embedding_table_as_int8_in_both_variants(tiny_ckpt, tmp_path, monkeypatch, method):
    """The tiny model's table is under the threshold: lowered here so the export path is exercised."""
    from mhsa_cli.config import ExportConfig, build_config
    from mhsa_cli.export import export

    monkeypatch.setattr(int8, "EMBED_MIN_ELEMENTS", 1)
    monkeypatch.setattr(int8, "gate", lambda calls, *a, **k: {"chosen": method, "why": method, "variants": {}})
    out = tmp_path / "e"
    r = export(build_config(ExportConfig, {"checkpoint": str(tiny_ckpt), "out": str(out), "threads": 1,
                                           "int8_methods": [method]}))
    meta = json.loads((out / "export.json").read_text())
    tables = meta["quantization"]["embeddings"]["tables"]
    assert len(tables) == 1 and meta["quantization"]["method"] == method
    fp32 = {t.name: t for t in onnx.load(str(out / "model.onnx")).graph.initializer}
    inits = {t.name: t for t in onnx.load(str(out / "model.int8.onnx")).graph.initializer}
    assert tables[0] in fp32 and tables[0] not in inits and inits[f"{tables[0]}_int8"].data_type == TensorProto.INT8
    from mhsa_cli.tasks import load_task

    from .conftest import TINY_TASK

    x = load_task("order", 0, **TINY_TASK).test.x
    a = load_runtime("onnxruntime", out, "fp32", threads=1).call(x)
    b = load_runtime("onnxruntime", out, "int8", threads=1).call(x)
    assert 0 < float((a - b).abs().max()) < 0.5
    assert r.accuracy["ort_int8"] == pytest.approx(float((b.argmax(-1) == load_task("order", 0, **TINY_TASK)
                                                          .test.y).float().mean()))


# --------------------------------------------------------------------------- torch (mhsa quantize)

def test_torch_int8_embedding_follows_the_hand_formula():
    import torch
    from torch import nn

    from mhsa_cli.quantize import Int8Embedding, embedding_names

    torch.manual_seed(0)
    emb = nn.Embedding(300, 8, padding_idx=0)  # 2,400 values: over the threshold; row 0 is zero
    with torch.no_grad():
        emb.weight[7] *= 40.0
    w = emb.weight.detach().numpy()
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0  # by hand, (300, 1)
    scale[0] = 1.0
    q = np.clip(np.rint(w / scale), -127, 127)
    m = Int8Embedding.from_float(emb)
    assert m.weight.dtype == torch.int8 and np.array_equal(m.weight.numpy(), q)
    ids = torch.tensor([[0, 7, 299], [5, 7, 1]])
    got = m(ids).numpy()
    assert np.allclose(got, (q * scale)[ids.numpy()], rtol=0, atol=1e-7)
    assert np.all(np.abs(got - w[ids.numpy()]) <= scale[ids.numpy()] / 2 + 1e-7) and np.all(got[0, 0] == 0)
    holder = nn.Module()
    holder.big, holder.small = emb, nn.Embedding(10, 8)  # 80 values: stays float
    holder.tied = nn.Embedding(300, 8)
    holder.out = nn.Linear(8, 300, bias=False)
    holder.out.weight = holder.tied.weight  # shared with an output layer: stays float
    assert embedding_names(holder) == ["big"]


def test_torch_and_ort_int8_store_the_same_table(tiny_ckpt, tmp_path, monkeypatch):
    """``mhsa quantize`` and ``mhsa export --int8`` quantize a table with one formula: same int8 rows."""
    import torch

    from mhsa_cli.checkpoint import load_model
    from mhsa_cli.config import ExportConfig, QuantizeConfig, build_config
    from mhsa_cli.export import export
    from mhsa_cli.quantize import Int8Embedding, quantize, rowwise

    monkeypatch.setattr(int8, "EMBED_MIN_ELEMENTS", 1)  # the tiny table is under the threshold: lowered
    monkeypatch.setattr(rowwise, "EMBED_MIN_ELEMENTS", 1)
    monkeypatch.setattr(int8, "gate", lambda calls, *a, **k: {"chosen": "dynamic", "why": "", "variants": {}})
    export(build_config(ExportConfig, {"checkpoint": str(tiny_ckpt), "out": str(tmp_path / "e"), "threads": 1,
                                       "int8_methods": ["dynamic"]}))
    quantize(build_config(QuantizeConfig, {"checkpoint": str(tiny_ckpt), "out": str(tmp_path / "q"),
                                           "latency_time": 0, "threads": 1}))
    table = load_model(tiny_ckpt).embed.weight
    q = load_model(tmp_path / "q").embed
    assert type(q) is Int8Embedding
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "e" / "model.int8.onnx")).graph.initializer}
    name = next(n for n in inits if n.endswith("_int8"))
    V = table.shape[0]  # the exported table may carry the cls row after the V token rows
    assert np.array_equal(inits[name][:V], q.weight.numpy())
    assert np.array_equal(inits[name.removesuffix("_int8") + "_scale"][:V], q.weight_scale.numpy())
    assert torch.equal(q.weight.float() * q.weight_scale, q(torch.arange(V)))
