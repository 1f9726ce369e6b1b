"""runtimes/: the registry, both runtimes' outputs, export-folder checks (one-line errors)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from mhsa_cli.checkpoint import load_model
from mhsa_cli.config import ExportConfig, build_config
from mhsa_cli.errors import MhsaError
from mhsa_cli.export import export
from mhsa_cli.runtimes import RUNTIMES, accuracy, get_runtime, load_runtime, runtime_names
from mhsa_cli.runtimes.folder import file_sha256
from mhsa_cli.tasks import load_task

from .conftest import TINY_TASK


@pytest.fixture(scope="module")
def folder(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt") / "export"
    export(build_config(ExportConfig, {"checkpoint": str(tiny_ckpt), "out": str(out), "threads": 1}))
    return out


@pytest.fixture(scope="module")
def data():
    return load_task("order", 0, **TINY_TASK)


def test_registry_names_and_unknown():
    assert runtime_names() == ["torch", "onnxruntime"] == list(RUNTIMES)
    with pytest.raises(MhsaError, match="unknown runtime 'onnxrt'.*did you mean 'onnxruntime'"):
        get_runtime("onnxrt")


def test_both_runtimes_give_the_checkpoints_logits(tiny_ckpt, folder, data):
    x = data.val.x[:9]
    t = load_runtime("torch", tiny_ckpt, threads=1)  # sets torch's threads: results are per thread count
    with torch.inference_mode():
        ref = load_model(tiny_ckpt)(x)
    o = load_runtime("onnxruntime", folder, threads=1)
    assert (t.runtime, t.precision, o.runtime, o.precision) == ("torch", "fp32", "onnxruntime", "fp32")
    assert o.threads == 1 and o.details["intra_op_threads"] == 1 and o.details["file"] == "model.onnx"
    with torch.inference_mode():
        assert torch.equal(t.call(x), ref)  # failed when the pooled-row block fed F.linear a strided view
        out = o.call(x)
    assert isinstance(out, torch.Tensor) and out.shape == ref.shape
    assert float((out - ref).abs().max()) <= 1e-4
    assert accuracy(o.call, data.test) == accuracy(t.call, data.test)


def test_ort_timed_call_is_a_bare_session_run_on_the_same_array(folder, data):
    """What the timer repeats for an ORT row: ``session.run`` on numpy made once, the call's logits."""
    import numpy as np

    o = load_runtime("onnxruntime", folder, "int8", threads=1)
    x = data.val.x[:5]
    run = o.call.timed_call(x)
    assert run.func == o.call.session.run  # the session's own run, nothing wrapped around it
    fed = run.keywords or run.args[1]
    assert isinstance(fed["input"], np.ndarray) and np.shares_memory(fed["input"], x.numpy())
    assert np.array_equal(run()[0], o.call(x).numpy())


def test_fused_attention_folders_need_a_recent_onnxruntime(folder, monkeypatch):
    """onnxruntime 1.17-1.20 computed MultiHeadAttention wrongly for the cls-row query (measured):
    such a folder is refused there in one line, and export.json says what it needs."""
    import onnxruntime as ort

    meta = json.loads((folder / "export.json").read_text())
    assert meta["exporter"]["fused_attention_layers"] == 2
    assert meta["requires"] == {"onnxruntime": ">=1.21", "ops": "com.microsoft.MultiHeadAttention"}
    monkeypatch.setattr(ort, "__version__", "1.20.1")
    with pytest.raises(MhsaError, match=r"onnxruntime 1.20.1 computes wrongly; install onnxruntime>=1.21, or "
                                        r"re-export with --no-fuse-attention"):
        load_runtime("onnxruntime", folder)
    monkeypatch.setattr(ort, "__version__", "1.21.0")
    assert load_runtime("onnxruntime", folder).precision == "fp32"


def test_accuracy_against_hand_count():
    class Fixed:  # predicts class 1 for every row
        def __call__(self, x):
            return torch.tensor([[0.0, 1.0]]).expand(len(x), 2)

    split = type("S", (), {})()
    split.x, split.y = torch.zeros(5, 3), torch.tensor([1, 0, 1, 1, 0])
    split.__class__.__len__ = lambda self: 5
    assert accuracy(Fixed(), split, batch_size=2) == pytest.approx(3 / 5)


def test_runtimes_refuse_what_they_cannot_load(tiny_ckpt, folder, tmp_path):
    with pytest.raises(MhsaError, match="is not an export folder: no export.json"):
        load_runtime("onnxruntime", tiny_ckpt)  # a checkpoint, not an export folder
    with pytest.raises(MhsaError, match="runtime torch cannot load"):
        load_runtime("torch", folder)
    with pytest.raises(MhsaError, match="cannot run int8 on cuda"):
        load_runtime("onnxruntime", folder, "int8", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(MhsaError, match="no CUDA provider"):
            load_runtime("onnxruntime", folder, "fp32", device="cuda")


def tampered(folder, tmp_path, content: bytes | None = None, fix_sha=True, name="model.onnx"):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    if content is not None:
        (bad / name).write_bytes(content)
    if fix_sha:
        meta = json.loads((bad / "export.json").read_text())
        meta["files"]["fp32"]["sha256"] = file_sha256(bad / name)
        (bad / "export.json").write_text(json.dumps(meta))
    return bad


def foreign_onnx() -> bytes:
    """A valid ONNX model of something else: y = x (float, rank 2); IR version 8, which every
    onnxruntime mhsa supports reads (the onnx package's newest is too new for older ones)."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_bad_export_folders(folder, tmp_path):
    with pytest.raises(MhsaError, match="is a file; expected an export folder"):
        load_runtime("onnxruntime", folder / "model.onnx")
    bad = tampered(folder, tmp_path, foreign_onnx(), fix_sha=False)
    with pytest.raises(MhsaError, match="model.onnx does not match export.json"):
        load_runtime("onnxruntime", bad)
    shutil.rmtree(bad)
    bad = tampered(folder, tmp_path, foreign_onnx())
    with pytest.raises(MhsaError, match="do not match export.json"):
        load_runtime("onnxruntime", bad)
    shutil.rmtree(bad)
    bad = tampered(folder, tmp_path, b"\x08\x07 not a protobuf at all")
    with pytest.raises(MhsaError, match="not a loadable ONNX model"):
        load_runtime("onnxruntime", bad)
    shutil.rmtree(bad)
    bad = tampered(folder, tmp_path, fix_sha=False)
    (bad / "export.json").write_text("{not json")
    with pytest.raises(MhsaError, match="export.json is not valid JSON"):
        get_runtime("onnxruntime").precisions(bad)
    (bad / "export.json").write_text(json.dumps({"format": "mhsa-export", "input": {"kind": "tokens"}, "files": {
        "fp32": {"file": "model.onnx"}}, "model": {"num_classes": 2}, "task": {}, "labels": ["a", "b"]}))
    with pytest.raises(MhsaError, match="has no int8 model"):
        load_runtime("onnxruntime", bad, "int8")


# ---------------------------------------------------------------- one registry: a new runtime is one entry
class _Doubled(torch.nn.Module):
    """A checkpoint's model with its logits doubled: same predictions, sharper probabilities."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * self.model(x)


def _fake_runtime():
    from mhsa_cli.checkpoint import load_checkpoint
    from mhsa_cli.runtimes import Loaded, Runtime

    def load(path, precision, threads, device):
        ckpt = load_checkpoint(path)
        return Loaded(_Doubled(load_model(ckpt)), "fake", precision, threads, str(path), {"scale": 2},
                      dict(ckpt.task_spec), ckpt.kind)

    is_ckpt = lambda p: (p / "checkpoint.json").is_file()  # noqa: E731
    return Runtime("fake", "a checkpoint with doubled logits (a test runtime)", load,
                   lambda p: ["fp32"] if is_ckpt(p) else [], lambda device, precision: None,
                   lambda: {"fake": "0.1"}, is_ckpt, "checkpoint")


@pytest.fixture
def fake_runtime():
    from mhsa_cli.runtimes import register, unregister

    register(_fake_runtime())
    yield "fake"
    unregister("fake")


@pytest.fixture(scope="module")
def text_ckpt(tmp_path_factory):
    from mhsa_cli.train import train

    from .conftest import tiny_train_config
    from .test_predict import write_csv

    root = tmp_path_factory.mktemp("fake-rt")
    train(tiny_train_config(root / "model", task="text", task_options={"path": write_csv(root / "d.csv", 60)},
                            epochs=1))
    return root / "model"


def test_a_registered_runtime_is_offered_by_bench_and_predict(fake_runtime, text_ckpt):
    from typer.testing import CliRunner

    from mhsa_cli.bench import bench
    from mhsa_cli.cli import app
    from mhsa_cli.config import BenchConfig, PredictConfig
    from mhsa_cli.predict import load_for_predict, predict, predict_texts
    from mhsa_cli.predict.loaders import runtime_names as predict_runtimes

    assert runtime_names() == ["torch", "onnxruntime", "fake"] and predict_runtimes()[-1] == "fake"
    # bench: a row per checkpoint in the new runtime, measured like torch's (same predictions)
    cfg = build_config(BenchConfig, {"checkpoints": [str(text_ckpt)], "runtime": ["fake", "torch"], "threads": 1,
                                     "min_time": 0.0, "min_repeats": 3, "warmup": 1, "batch_sizes": [1]})
    result = bench(cfg)
    assert [(r.name, r.runtime, r.precision) for r in result.rows] == [
        ("model", "torch", "fp32"), ("model (fake fp32)", "fake", "fp32")]  # registry order
    torch_row, fake_row = result.rows
    assert fake_row.test_acc == torch_row.test_acc and fake_row.params == torch_row.params
    assert result.environment["runtimes"] == ["fake", "torch"] and result.environment["fake"] == "0.1"
    assert fake_row.latency[("cpu", 1)].latency_ms_p50 > 0
    # predict: by name, its probabilities are softmax(2 x logits) = p^2 / sum p^2 of torch's p
    texts = ["good thing, number1", "bad stuff", "fine day"]
    p = predict_texts(load_for_predict(text_ckpt, "torch"), texts)
    q = predict_texts(load_for_predict(text_ckpt, "fake"), texts)
    assert torch.allclose(q, p ** 2 / (p ** 2).sum(-1, keepdim=True), atol=1e-6)
    r = predict(build_config(PredictConfig, {"checkpoint": str(text_ckpt), "runtime": "fake", "text": texts}))
    assert r.runtime == "fake" and [s.label for s in r.shown] == [
        r.labels[k] for k in p.argmax(-1).tolist()]
    out = CliRunner().invoke(app, ["predict", str(text_ckpt), "--runtime", "fake", "--text", "good"])
    assert out.exit_code == 0 and "runtime fake" in out.output, out.output
    assert load_for_predict(text_ckpt).runtime == "torch"  # auto: the first runtime that takes the folder


def test_runtimes_register_in_table_order_without_being_rebound():
    import mhsa_cli.runtimes as rt

    assert rt.RUNTIME_MODULES == ("torch_eager", "onnxruntime")  # a new runtime: one module + one entry here
    assert [r.reads for r in rt.RUNTIMES.values()] == ["checkpoint", "export"]
    with pytest.raises(ValueError, match="reads must be one of"):
        rt.register(rt.Runtime("bad", "", None, None, None, None, None, "folder"))
    assert "bad" not in rt.RUNTIMES


# --------------------------------------------------------------------------- ORT on CUDA, honestly

def test_a_cuda_session_that_runs_on_the_cpu_is_recorded_as_fallen_back(folder, monkeypatch):
    """ORT takes the CPU silently when the CUDA provider does not load: the providers the session took
    are recorded and the fallback named (here for real: this onnxruntime build has no CUDA provider)."""
    import warnings

    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT's own "not in available provider names"
        gpu = load_runtime("onnxruntime", folder, "fp32", threads=1, device="cuda")
    assert gpu.details["providers"] == ["CPUExecutionProvider"] and gpu.call.on_cuda is False
    assert gpu.details["fell_back"] == "CUDA asked for, the session took CPUExecutionProvider"
    cpu = load_runtime("onnxruntime", folder, "fp32", threads=1)
    assert cpu.details["providers"] == ["CPUExecutionProvider"] and "fell_back" not in cpu.details


class _FakeCudaSession:
    """A session that took the CUDA provider (mocked): records IOBinding calls, refuses host runs."""

    def __init__(self):
        self.bound, self.runs = [], 0

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def io_binding(self):
        session = self

        class Binding:
            def bind_input(self, *args):
                session.bound.append(("input", *args))

            def bind_output(self, *args):
                session.bound.append(("output", *args))
        return Binding()

    def run_with_iobinding(self, binding):
        self.runs += 1

    def run(self, *args):
        raise AssertionError("a host run (numpy in, numpy out) on the CUDA provider copies every call")


class _FakeCudaTensor:
    """What OrtCall reads of a CUDA tensor (none can be made on this CPU-only machine)."""

    is_cuda, dtype, shape = True, torch.int64, (2, 5)
    device = torch.device("cuda", 1)

    def to(self, dtype):
        assert dtype == torch.int64
        return self

    def contiguous(self):
        return self

    def data_ptr(self):
        return 4096


def test_ort_on_cuda_times_a_bound_run_without_host_copies(monkeypatch):
    """On the CUDA provider the timed call binds the GPU input in place and leaves the logits on the
    GPU (no host <-> device copy, as for torch rows); the session is not asked for another provider."""
    import numpy as np

    from mhsa_cli.runtimes.onnxruntime import OrtCall

    session, x = _FakeCudaSession(), _FakeCudaTensor()
    call = OrtCall(session, np.dtype("int64"))
    assert call.on_cuda
    run = call.timed_call(x)
    run()
    run()
    assert session.bound == [("input", "input", "cuda", 1, np.int64, (2, 5), 4096), ("output", "logits", "cuda", 1)]
    assert session.runs == 2 and run.keep_alive is x  # bound once, run per call; x kept alive
    cpu = OrtCall(type("S", (), {"get_providers": lambda self: ["CPUExecutionProvider"]})(), np.dtype("int64"))
    assert not cpu.on_cuda


def _edit(meta, path, value):
    """Set ``meta[path]`` (dotted; ``None`` deletes it)."""
    *parents, key = path.split(".")
    for p in parents:
        meta = meta[p]
    if value is None:
        meta.pop(key, None)
    else:
        meta[key] = value


@pytest.mark.parametrize("edits,fragment", [
    ({"labels": None}, "export.json has no 'labels'"),  # was a KeyError in predict
    ({"labels": ["a", "a", "b", "c", "d", "e"]}, "names class 'a' twice"),  # was accepted
    ({"labels": ["a", "b"]}, "'labels' names 2 classes but the model has 6"),  # was a shape RuntimeError
    ({"labels": [1, 2, 3, 4, 5, 6]}, "class names must be non-empty strings"),
    ({"task.labels": ["a", "b", "c", "d", "e", "f"]}, "'labels' and 'task.labels' disagree"),
    ({"input.name": "input_ids"}, "names the input 'input_ids', but mhsa graphs take 'input'"),  # was accepted
    ({"input.kind": "pixels"}, "input kind 'pixels' is not one of"),
    ({"model.num_classes": "6"}, "model.num_classes must be an integer"),
    ({"files": ["model.onnx"]}, "'files' must be a mapping"),
    # a consistent export.json of 3 classes beside a graph of 6: the graph's output is checked
    ({"labels": ["a", "b", "c"], "model.num_classes": 3}, "logits has shape ['batch', 6], but export.json says"),
])
def test_export_json_that_disagrees_with_itself_or_the_graph_is_refused(folder, tmp_path, edits, fragment):
    bad = tampered(folder, tmp_path, fix_sha=False)
    meta = json.loads((bad / "export.json").read_text())
    for path, value in edits.items():
        _edit(meta, path, value)
    (bad / "export.json").write_text(json.dumps(meta))
    for precision in ("fp32", "int8"):
        with pytest.raises(MhsaError, match=r"^export folder .*" + re.escape(fragment)
                           if "logits" not in fragment else re.escape(fragment)):
            load_runtime("onnxruntime", bad, precision)


def _swap(bad):
    (bad / "model.onnx").rename(bad / "tmp")
    (bad / "model.int8.onnx").rename(bad / "model.onnx")
    (bad / "tmp").rename(bad / "model.int8.onnx")


def _set_file(bad, precision, **entry):
    meta = json.loads((bad / "export.json").read_text())
    meta["files"][precision].update(entry)
    if entry.get("sha256", 0) is None:
        meta["files"][precision].pop("sha256")
    (bad / "export.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage,fragment", [
    (lambda b: (b / "model.int8.onnx").write_bytes((b / "model.int8.onnx").read_bytes()[:100]),
     "model.int8.onnx does not match export.json (SHA-256 differs"),  # truncated: loading fp32 was fine
    (_swap, "model.onnx does not match export.json"),
    (lambda b: (b / "model.int8.onnx").unlink(), "model.int8.onnx is missing (listed in export.json)"),
    (lambda b: _set_file(b, "int8", file="../model.int8.onnx"), "export.json lists int8 file '../model.int8.onnx', not a file"),
    (lambda b: _set_file(b, "int8", sha256=None), "export.json records no SHA-256 for model.int8.onnx"),
])
def test_the_whole_folder_is_verified_before_either_file_loads(folder, tmp_path, damage, fragment):
    bad = tampered(folder, tmp_path, fix_sha=False)
    damage(bad)
    for precision in ("fp32", "int8"):
        with pytest.raises(MhsaError, match=f"^export folder {re.escape(str(bad))}: " + re.escape(fragment)):
            load_runtime("onnxruntime", bad, precision)
