"""The ``onnxruntime`` runtime: an export folder's ONNX files in ONNX Runtime.

Sessions: all graph optimisations (``ORT_ENABLE_ALL``), sequential execution,
``intra_op_num_threads`` = the requested threads (torch's count by default, so
both runtimes get the same cores), one inter-op thread, and intra-op spinning
off: ORT's pool threads otherwise spin-wait after each call and take the CPU
from whatever runs next (the next model in an interleaved benchmark).

Measured (2 threads, quickstart models, 2-core machine at load 5-6, so only the
direction is firm): interleaved with torch models, spinning on made the torch
rows 2-5x slower (torch fp32 baseline at batch 32: 142-241 ms vs 26-48 ms);
timed alone, spinning off costs ORT itself at batch 1 (int8 student 0.129 vs
0.066 ms; 1 thread: 0.062 ms). With one thread there is no pool and no
difference: compare runtimes with ``--threads 1`` where it matters.

CUDA: a session asked for the CUDA provider may silently run on the CPU (the
provider failed to load). :func:`_load` records the providers the session
actually took (``details["providers"]``, ``session.get_providers()``) and,
when CUDA was asked for but not taken, ``details["fell_back"]``. On the CUDA
provider the timed call reads its input where it lies on the GPU and leaves
the logits there (IOBinding), so, as for torch rows, no host <-> device copy
is timed.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..environment import package_version
from ..errors import MhsaError
from . import Loaded, Runtime, register
from .folder import DTYPES, FILES, INPUT_NAME, OUTPUT_NAME, is_export_folder, onnx_file, read_export_meta

CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"
# export folders whose graph has MultiHeadAttention nodes need this ORT: 1.17-1.20 computed them
# wrongly for a query of other length than the keys (the cls row alone; logit gaps 0.3-8.7, measured)
FUSED_ATTENTION_MIN_ORT = (1, 21)


def check_version(meta: dict[str, Any], where: Path) -> None:
    """Refuse a folder whose graph this onnxruntime computes wrongly (see FUSED_ATTENTION_MIN_ORT).

    Raises:
        MhsaError: fused attention layers and an older onnxruntime.
    """
    import onnxruntime as ort

    fused = (meta.get("exporter") or {}).get("fused_attention_layers")
    have = tuple(int(p) for p in ort.__version__.split(".")[:2] if p.isdigit())
    if fused and have < FUSED_ATTENTION_MIN_ORT:
        need = ".".join(map(str, FUSED_ATTENTION_MIN_ORT))
        raise MhsaError(f"{where}: its attention runs as MultiHeadAttention nodes, which onnxruntime "
                        f"{ort.__version__} computes wrongly; install onnxruntime>={need}, or re-export with "
                        f"--no-fuse-attention")


class OrtCall:
    """``x -> logits`` over one ``InferenceSession``: torch in, torch out, no copies on the CPU."""

    def __init__(self, session: Any, dtype: np.dtype):
        self.session, self.dtype = session, dtype
        self.on_cuda = CUDA_PROVIDER in session.get_providers()  # the provider taken, not the one asked for

    def _array(self, x: torch.Tensor) -> np.ndarray:
        try:  # shares memory with a CPU tensor: ~0.6 us, where detach().cpu() first cost ~1.5 us (a 30 us
            a = x.numpy()  # model's 5 %); raises for a tensor that needs grad or lives on a GPU
        except (RuntimeError, TypeError):
            a = x.detach().cpu().numpy()
        return a if a.dtype == self.dtype else a.astype(self.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: self._array(x)})[0])

    def timed_call(self, x: torch.Tensor) -> Callable[[], Any]:
        """The call the timer repeats (:mod:`mhsa_cli.bench.timer`): ``session.run`` on ``x``'s
        array made once, numpy out, as a deployment feeding ORT calls it. Measured on the
        student's int8 graph (p50, one run): bare ``session.run`` 27.0 / 38.4 us at 1 / 2
        threads, through ``__call__`` 28.4 / 41.1 us: its torch <-> numpy wrapping is harness
        cost, 4-7 % of a small model's time.

        On the CUDA provider with ``x`` on the GPU: :meth:`_bound_call` (no host copies)."""
        if self.on_cuda and x.is_cuda:
            return self._bound_call(x)
        return partial(self.session.run, [OUTPUT_NAME], {INPUT_NAME: self._array(x)})

    def _bound_call(self, x: torch.Tensor) -> Callable[[], Any]:
        """``session.run_with_iobinding`` reading ``x`` in place on its GPU and leaving the logits
        there: the timed call copies nothing between host and device, like a torch row's (its
        input moved to the GPU before timing, its logits left on the GPU)."""
        x = x.to(torch.from_numpy(np.empty(0, self.dtype)).dtype).contiguous()
        device_id = x.device.index or 0
        binding = self.session.io_binding()
        binding.bind_input(INPUT_NAME, "cuda", device_id, self.dtype.type, tuple(x.shape), x.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", device_id)
        run = partial(self.session.run_with_iobinding, binding)
        run.keep_alive = x  # type: ignore[attr-defined]  # the binding holds a raw pointer to x's memory
        return run


def session_options(threads: int, spinning: bool = False) -> Any:
    """The session settings every ORT row uses (see the module docstring); ``spinning``: ORT's
    default pool threads that spin-wait between calls, for a model timed alone (benchmarks)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3  # errors only
    return so


def make_session(path: Path, threads: int, device: str = "cpu", spinning: bool = False) -> Any:
    """An ``InferenceSession`` for an ONNX file.

    Raises:
        MhsaError: the file is not a loadable ONNX model (corrupt, truncated, foreign ops).
    """
    import onnxruntime as ort

    providers = [CUDA_PROVIDER, CPU_PROVIDER] if device == "cuda" else [CPU_PROVIDER]
    try:
        return ort.InferenceSession(str(path), session_options(threads, spinning), providers=providers)
    except Exception as exc:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MhsaError(f"{path} is not a loadable ONNX model ({first[:200]})") from None


def check_signature(session: Any, meta: dict[str, Any], where: Path) -> None:
    """The graph's input and output must be what ``export.json`` says.

    Raises:
        MhsaError: other names, element type or rank (a foreign ONNX file).
    """
    spec = meta["input"]
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want_rank = 2 if spec.get("kind") == "tokens" else 3
    want_type = f"tensor({DTYPES.get(spec.get('kind'), '?').replace('float32', 'float')})"
    got = [(i.name, i.type, len(i.shape)) for i in inputs]
    if got != [(INPUT_NAME, want_type, want_rank)] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise MhsaError(f"{where}: the ONNX graph's inputs/outputs {got} / {[o.name for o in outputs]} do not "
                        f"match export.json ({INPUT_NAME}: {want_type}, rank {want_rank}; output {OUTPUT_NAME})")
    classes, shape = meta["model"]["num_classes"], list(outputs[0].shape)
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != classes):
        raise MhsaError(f"{where}: the ONNX graph's {OUTPUT_NAME} has shape {shape}, but export.json says "
                        f"(batch, {classes}): {classes} classes")


def _precisions(path: Path) -> list[str]:
    # raises the reason a path is no export folder (a bare .onnx file, a checkpoint, ...)
    return [p for p in FILES if p in read_export_meta(path)["files"]]


def fell_back(device: str, providers: list[str]) -> str | None:
    """Why a session asked for ``device`` runs elsewhere, or None: CUDA asked for, not taken."""
    if device == "cuda" and CUDA_PROVIDER not in providers:
        return f"CUDA asked for, the session took {', '.join(providers) or 'no provider'}"
    return None


def _load(path: Path, precision: str, threads: int, device: str) -> Loaded:
    meta = read_export_meta(path)
    f = onnx_file(path, meta, precision)
    check_version(meta, path)
    session = make_session(f, threads, device)
    check_signature(session, meta, f)
    dtype = np.dtype(DTYPES[meta["input"]["kind"]])
    providers = list(session.get_providers())  # what the session took (ORT falls back silently)
    details = {"file": f.name, "providers": providers, "graph_optimization": "ORT_ENABLE_ALL",
               "intra_op_threads": threads, "inter_op_threads": 1, "spinning": False}
    why = fell_back(device, providers)
    if why:
        details["fell_back"] = why
    return Loaded(OrtCall(session, dtype), "onnxruntime", precision, threads, str(path), details,
                  dict(meta["task"]), f"onnx {precision}")


def cuda_provider_reason() -> str | None:
    """None when ORT's CUDA provider is installed, else why CUDA cells are skipped."""
    import onnxruntime as ort

    if CUDA_PROVIDER in ort.get_available_providers():
        return None
    return f"this onnxruntime build ({ort.__version__}) has no CUDA provider (install onnxruntime-gpu)"


def _unavailable(device: str, precision: str) -> str | None:
    if device != "cuda":
        return None
    return cuda_provider_reason() or ("ORT dynamic int8 (MatMulInteger) runs on the CPU provider"
                                      if precision.startswith("int8") else None)


register(Runtime("onnxruntime", "mhsa export folder (ONNX fp32 / dynamic int8), ONNX Runtime", _load, _precisions,
                 _unavailable, lambda: {"onnx": package_version("onnx"),
                                        "onnxruntime": package_version("onnxruntime")},
                 is_export_folder, "export"))
