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
