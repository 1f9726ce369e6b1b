"""Dynamic int8 quantization of every ``nn.Linear``, behind a small backend interface.

What is quantized: the q/k/v/o projections of every attention layer, both
feed-forward layers, the feature projection of feature models, and (unless
``--no-classifier``) the classifier. Embeddings, positions, the CLS token,
layer norms and the bias of 0-head layers stay float; :func:`float_parts`
lists them so nothing is skipped silently.

Weights are int8 with per-tensor (or per-output-channel) scales; activations
are quantized on the fly per batch by the kernel ("dynamic"), so no
calibration data is needed. The kernels exist for the CPU only.

The backend (today :class:`TorchAoDynamicBackend`: the deprecated but fast
eager ``torch.ao.quantization.quantize_dynamic``) does three things: quantize
a float model, export its tensors for safetensors, and rebuild a quantized
model from those tensors without pickle. Another backend can replace it by
registering in :data:`BACKENDS`.

Checkpoint layout (kind ``int8``): for each quantized Linear ``name``:
``name.weight`` int8 (out, in), ``name.weight_scale`` float32 (1,) or (out,),
``name.weight_zero_point`` int64 (same shape), ``name.bias`` float32 (out,);
every other tensor as in a float checkpoint. The settings needed to rebuild
(backend, engine, per-channel, module list) are in
``checkpoint.json`` -> ``extra.quantization``.
"""

from __future__ import annotations

import platform
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn

from .errors import MhsaError, choice
from .progress import NULL, Progress

# Engine -> what it is. "auto" is resolved by :func:`resolve_engine`.
ENGINES: dict[str, str] = {
    "auto": "the fastest engine supported on this CPU (x86 > fbgemm > onednn; qnnpack on ARM)",
    "x86": "x86 CPUs: picks fbgemm or oneDNN kernels per layer (torch's default on x86)",
    "fbgemm": "x86 CPUs with AVX2 / AVX-512 (VNNI)",
    "onednn": "oneDNN kernels (x86 and ARM)",
    "qnnpack": "ARM / mobile; much slower than fbgemm on x86",
}
# Preference of "auto" per CPU family: a rule, checked by benchmarks/quantize_targets.py.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "x86": ("x86", "fbgemm", "onednn", "qnnpack"),
    "arm": ("qnnpack", "onednn", "x86", "fbgemm"),
}
_CPU_FAMILY = {"x86_64": "x86", "amd64": "x86", "i386": "x86", "i686": "x86",
               "aarch64": "arm", "arm64": "arm", "armv7l": "arm"}
CLASSIFIER = "head"  # module name of the classifier in MHSAClassifier
QPARAM_SUFFIXES = (".weight_scale", ".weight_zero_point")  # metadata, not parameters
CPU_ONLY = "int8 checkpoints run on CPU only (dynamic int8 kernels have no CUDA path)"


# --------------------------------------------------------------------------- helpers

@contextmanager
def quiet() -> Iterator[None]:
    """Hide torch's deprecation warnings of ``torch.ao.quantization`` and of
    quantized-tensor creation; users cannot act on them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=r"(?is).*quantiz")
        yield


@contextmanager
def use_engine(engine: str) -> Iterator[None]:
    """Set ``torch.backends.quantized.engine`` for the block (weights are packed for it)."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def supported_engines() -> list[str]:
    """Quantized engines this torch build supports on this machine (no "none")."""
    return [e for e in torch.backends.quantized.supported_engines if e in ENGINES and e != "auto"]


def cpu_family() -> str:
    """"x86" or "arm" (anything else is treated as x86)."""
    return _CPU_FAMILY.get(platform.machine().lower(), "x86")


def resolve_engine(name: str) -> str:
    """Turn ``--engine`` into a concrete engine supported here.

    Args:
        name: a key of :data:`ENGINES`; ``auto`` takes the first supported engine
            of :data:`AUTO_ORDER` for this CPU family (on x86 qnnpack comes last:
            it is several times slower there).

    Returns:
        The engine name.

    Raises:
        MhsaError: unknown engine, or one this machine does not support.
    """
    choice("quantized engine", name, ENGINES)
    supported = supported_engines()
    if name == "auto":
        for engine in AUTO_ORDER[cpu_family()]:
            if engine in supported:
                return engine
        raise MhsaError(f"this torch build has no quantized engine (torch {torch.__version__})")
    if name not in supported:
        raise MhsaError(f"quantized engine '{name}' is not supported on this machine "
                        f"(supported: {', '.join(supported) or 'none'}); use --engine auto")
    return name


def linear_names(model: nn.Module, classifier: bool = True) -> list[str]:
    """Names of every ``nn.Linear`` to quantize (the classifier only with ``classifier``)."""
    return [n for n, m in model.named_modules()
            if type(m) is nn.Linear and (classifier or n != CLASSIFIER)]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


# --------------------------------------------------------------------------- backends

class Backend(Protocol):
    """What a quantization backend provides (see :class:`TorchAoDynamicBackend`)."""

    name: str

    def quantize(self, model: nn.Module, engine: str, per_channel: bool,
                 include: list[str]) -> nn.Module:
        """A quantized copy of float ``model``: the Linear modules named in ``include``."""

    def quantized_names(self, model: nn.Module) -> list[str]:
        """Names of the modules of ``model`` that hold int8 weights (empty: not ours)."""

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Safetensors-ready tensors: int8 weights, scales, zero points, float rest."""

    def rebuild(self, float_model: nn.Module, tensors: dict[str, torch.Tensor],
                settings: dict[str, Any]) -> nn.Module:
        """Turn a freshly built float model into the stored quantized one (no pickle)."""


class TorchAoDynamicBackend:
    """``torch.ao.quantization.quantize_dynamic`` (qint8 weights, quint8 activations)."""

    name = "torch-ao"

    @staticmethod
    def _linear_type() -> type:
        with quiet():
            from torch.ao.nn.quantized.dynamic import Linear
        return Linear

    def quantize(self, model: nn.Module, engine: str, per_channel: bool,
                 include: list[str]) -> nn.Module:
        with quiet():
            from torch.ao.quantization import (default_dynamic_qconfig, per_channel_dynamic_qconfig,
                                               quantize_dynamic)

            qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
            with use_engine(engine):
                q = quantize_dynamic(model, {n: qconfig for n in include}, dtype=torch.qint8, inplace=False)
        done = self.quantized_names(q)
        if sorted(done) != sorted(include):  # finish the surgery here, or fail loudly
            raise RuntimeError(f"quantize_dynamic quantized {done}, expected {include}")
        return q

    def quantized_names(self, model: nn.Module) -> list[str]:
        linear = self._linear_type()
        return [n for n, m in model.named_modules() if isinstance(m, linear)]

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        qnames = set(self.quantized_names(model))
        out = {k: v.detach() for k, v in model.state_dict().items() if not _inside(k, qnames)}
        for name in sorted(qnames):
            out.update(self._export(name, model.get_submodule(name)))
        return out

    @staticmethod
    def _export(name: str, module: nn.Module) -> dict[str, torch.Tensor]:
        with quiet():
            w, b = module._weight_bias()  # qint8 (out, in), float (out,) or None
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scale, zp = w.q_per_channel_scales(), w.q_per_channel_zero_points()  # (out,)
        else:
            scale, zp = torch.tensor([w.q_scale()]), torch.tensor([w.q_zero_point()])  # (1,)
        out = {f"{name}.weight": w.int_repr(), f"{name}.weight_scale": scale.float(),
               f"{name}.weight_zero_point": zp.long()}
        if b is not None:
            out[f"{name}.bias"] = b.detach().float()
        return out

    def rebuild(self, float_model: nn.Module, tensors: dict[str, torch.Tensor],
                settings: dict[str, Any]) -> nn.Module:
        include = list(settings["modules"])
        linears = {n: _float_linear(float_model, n) for n in include}
        _load_float_part(float_model, tensors, include)
        expected = {k for n, m in linears.items() for k in _quant_keys(n, m)}
        extra = sorted(k for k in tensors if _inside(k, set(include)) and k not in expected)
        if extra:
            raise MhsaError(f"unexpected tensor {extra[0]}")
        with quiet(), use_engine(settings["engine"]):  # weights are packed for this engine
            for n, lin in linears.items():
                _set_submodule(float_model, n, self._module(n, lin, tensors, settings["per_channel"]))
        return float_model

    def _module(self, name: str, lin: nn.Linear, tensors: dict[str, torch.Tensor],
                per_channel: bool) -> nn.Module:
        """A dynamic int8 Linear holding the stored weight and bias of ``name``."""
        q = self._linear_type()(lin.in_features, lin.out_features, bias_=lin.bias is not None, dtype=torch.qint8)
        bias = _tensor(tensors, f"{name}.bias", (lin.out_features,)).float() if lin.bias is not None else None
        q.set_weight_bias(_qweight(name, lin, tensors, per_channel), bias)
        return q


def _inside(key: str, modules: set[str]) -> bool:
    return any(key.startswith(f"{m}.") for m in modules)


def _float_linear(model: nn.Module, name: str) -> nn.Linear:
    try:
        m = model.get_submodule(name)
    except AttributeError:
        m = None
    if type(m) is not nn.Linear:
        raise MhsaError(f"quantized module '{name}' is not a Linear layer of this architecture")
    return m


def _quant_keys(name: str, linear: nn.Linear) -> list[str]:
    keys = [f"{name}.weight", *(name + s for s in QPARAM_SUFFIXES)]
    return keys + ([f"{name}.bias"] if linear.bias is not None else [])


def _tensor(tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...],
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensors[key]`` checked for shape (and dtype), or a one-line error."""
    t = tensors.get(key)
    if t is None:
        raise MhsaError(f"missing tensor {key}")
    if tuple(t.shape) != shape:
        raise MhsaError(f"{key} has shape {tuple(t.shape)}, expected {shape}")
    if dtype is not None and t.dtype != dtype:
        raise MhsaError(f"{key} is {t.dtype}, expected {dtype}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise MhsaError(f"{key} has non-finite values")
    return t


def _qweight(name: str, lin: nn.Linear, tensors: dict[str, torch.Tensor], per_channel: bool) -> torch.Tensor:
    """Quantized weight (out, in) from stored int8 values, scales and zero points."""
    out_f = lin.out_features
    qshape = (out_f,) if per_channel else (1,)
    w = _tensor(tensors, f"{name}.weight", tuple(lin.weight.shape), torch.int8)
    scale = _tensor(tensors, f"{name}.weight_scale", qshape, torch.float32)
    zp = _tensor(tensors, f"{name}.weight_zero_point", qshape, torch.int64)
    if (scale <= 0).any() or (zp < -128).any() or (zp > 127).any():
        raise MhsaError(f"{name}: scales must be > 0 and zero points in [-128, 127]")
    if per_channel:
        return torch._make_per_channel_quantized_tensor(w, scale.double(), zp, 0)
    return torch._make_per_tensor_quantized_tensor(w, float(scale), int(zp))


def _load_float_part(model: nn.Module, tensors: dict[str, torch.Tensor], include: list[str]) -> None:
    """Strictly load every tensor that is not inside a quantized module."""
    qset = set(include)
    expected = {k: v for k, v in model.state_dict().items() if not _inside(k, qset)}
    given = {k for k in tensors if not _inside(k, qset)}
    missing, unexpected = sorted(set(expected) - given), sorted(given - set(expected))
    if missing or unexpected:
        raise MhsaError(f"weights disagree with the JSON architecture "
                        f"({'missing ' + missing[0] if missing else 'unexpected ' + unexpected[0]})")
    part = {k: _tensor(tensors, k, tuple(v.shape)) for k, v in expected.items()}
    if any(not t.is_floating_point() for t in part.values()):
        raise MhsaError("float tensors of an int8 checkpoint must be floating point")
    model.load_state_dict(part, strict=False)


BACKENDS: dict[str, Backend] = {"torch-ao": TorchAoDynamicBackend()}


def backend_of(model: nn.Module) -> Backend | None:
    """The backend whose quantized modules ``model`` holds, or None for a float model."""
    for backend in BACKENDS.values():
        if backend.quantized_names(model):
            return backend
    return None


# --------------------------------------------------------------------------- measures

def export_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Tensors of a float or quantized model as they are stored in a checkpoint."""
    backend = backend_of(model)
    return backend.state(model) if backend else {k: v.detach() for k, v in model.state_dict().items()}


def model_weight_bytes(model: nn.Module) -> int:
    """In-memory bytes of the weights: float tensors x4, int8 weights x1 + scales.

    Works for float and dynamic-quantized models alike (the logical sizes; packed
    kernels may pad a little).
    """
    return sum(t.numel() * t.element_size() for t in export_state(model).values())


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"int8": elements stored as int8, "float": float parameter elements}``
    (scales and zero points are quantization metadata, not parameters)."""
    counts = {"int8": 0, "float": 0}
    for k, t in export_state(model).items():
        if not k.endswith(QPARAM_SUFFIXES):
            counts["int8" if t.dtype == torch.int8 else "float"] += t.numel()
    return counts


def int8_fraction(model: nn.Module) -> float:
    """Fraction of the parameters (elements) stored as int8: 0.0 for a float model."""
    c = parameter_counts(model)
    return c["int8"] / max(c["int8"] + c["float"], 1)


def float_parts(model: nn.Module) -> list[dict[str, Any]]:
    """What stays float: ``{"name", "type", "params"}`` per module (or loose parameter).

    torch layers (LayerNorm, Embedding, a float Linear) are listed by module;
    parameters held by our own modules (positions, CLS token, a 0-head layer's
    ``attn.o_bias``) by name.
    """
    qnames = set(backend.quantized_names(model)) if (backend := backend_of(model)) else set()
    parts = []
    for name, m in model.named_modules():
        own = list(m.named_parameters(recurse=False))
        if not own or name in qnames:
            continue
        if type(m).__module__.startswith("torch.nn"):  # a layer: LayerNorm, Embedding, float Linear
            parts.append({"name": name, "type": type(m).__name__, "params": sum(p.numel() for _, p in own)})
        else:
            parts += [{"name": f"{name}.{p_name}" if name else p_name, "type": "Parameter",
                       "params": p.numel()} for p_name, p in own]
    return parts


def require_cpu(what: Any, device: str | torch.device) -> None:
    """Refuse to run an int8 checkpoint or model anywhere but the CPU.

    Args:
        what: a :class:`~mhsa_cli.checkpoint.Checkpoint`, its kind ("int8" /
            "float"), or a model.
        device: the device asked for ("auto" counts as the CPU for int8).

    Raises:
        MhsaError: ``what`` is int8 and ``device`` is not the CPU.
    """
    if isinstance(what, nn.Module):
        kind = "int8" if backend_of(what) else "float"
    else:
        kind = what if isinstance(what, str) else getattr(what, "kind", "float")
    dev = str(device)
    if kind == "int8" and dev != "auto" and torch.device(dev).type != "cpu":
        raise MhsaError(f"{CPU_ONLY}; use --devices cpu (asked for {dev})")


# --------------------------------------------------------------------------- load path

def settings_of(ckpt: Any) -> dict[str, Any]:
    """The quantization settings stored in an int8 checkpoint, validated.

    Raises:
        MhsaError: missing or malformed ``extra.quantization``.
    """
    from .checkpoint import META

    extra = ckpt.meta.get("extra")
    s = extra.get("quantization") if isinstance(extra, dict) else None
    where = f"checkpoint {ckpt.path}: {META}"
    if not isinstance(s, dict):
        raise MhsaError(f"{where} has no extra.quantization settings")
    checks = {"backend": lambda v: v in BACKENDS, "engine": lambda v: v in ENGINES and v != "auto",
              "per_channel": lambda v: isinstance(v, bool),
              "modules": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v)}
    for key, ok in checks.items():
        if key not in s or not ok(s[key]):
            raise MhsaError(f"{where}: extra.quantization.{key} is missing or invalid ({s.get(key)!r})")
    return s


def rebuild_quantized(ckpt: Any) -> nn.Module:
    """Rebuild the quantized model of an int8 checkpoint, without pickle.

    The float model is built from the JSON architecture, its float tensors are
    loaded strictly, and each listed Linear is replaced by a quantized one whose
    weight is made from the stored int8 values, scales and zero points. Weights
    are packed for the recorded engine, or for ``auto`` where that engine is not
    supported on this machine (int8 values are engine-independent).

    Args:
        ckpt: a loaded :class:`~mhsa_cli.checkpoint.Checkpoint` of kind int8.

    Returns:
        The model in eval mode on the CPU; ``model.quantization`` holds the settings.

    Raises:
        MhsaError: malformed settings or tensors that disagree with the JSON.
    """
    from .model import build_model

    settings = dict(settings_of(ckpt))
    if settings["engine"] not in supported_engines():
        settings["engine"] = resolve_engine("auto")
    try:
        model = BACKENDS[settings["backend"]].rebuild(build_model(ckpt.model_config), ckpt.tensors, settings)
    except (MhsaError, RuntimeError, ValueError) as exc:  # torch rejects what our checks missed
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MhsaError(f"checkpoint {ckpt.path}: {first}") from None
    model.quantization = settings
    return model.eval()


# --------------------------------------------------------------------------- mhsa quantize

@dataclass
class QuantizeResult:
    """What :func:`quantize` returns (the CLI renders it)."""

    out: str
    source: str
    backend: str
    engine: str  # the engine used (resolved from engine_requested)
    engine_requested: str
    per_channel: bool
    threads: int
    quantized_modules: list[str]
    float_modules: list[dict[str, Any]]  # {"name", "type", "params"}
    params_int8: int
    params_float: int
    int8_fraction: float
    size_bytes_float: int  # weights file on disk
    size_bytes_int8: int
    weight_bytes_float: int  # in memory
    weight_bytes_int8: int
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> {"float", "int8"}

    @property
    def size_ratio(self) -> float:
        return self.size_bytes_int8 / max(self.size_bytes_float, 1)


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Exact size of the weights file :func:`checkpoint.save_checkpoint` will write."""
    from safetensors.torch import save

    from .checkpoint import FORMAT

    return len(save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": FORMAT}))


def _load_source(cfg: Any) -> Any:
    """Load the input checkpoint and check the output folder; refuse int8 inputs."""
    from .checkpoint import check_output_dir, load_checkpoint

    ckpt = load_checkpoint(cfg.checkpoint)
    if ckpt.kind == "int8":
        parent = (ckpt.meta.get("lineage") or [{}])[-1].get("parent")
        raise MhsaError(f"{ckpt.path} is already quantized (int8); quantize its float parent"
                        + (f" ({parent})" if parent else "") + " instead")
    if Path(cfg.out).resolve() == ckpt.path.resolve():
        raise MhsaError(f"--out {cfg.out} is the input checkpoint; choose another folder")
    check_output_dir(cfg.out, cfg.force)
    return ckpt


def _accuracy(models: dict[str, nn.Module], data: Any, progress: Progress) -> dict[str, dict[str, float]]:
    """Validation and test accuracy of each model: {split: {model name: acc}}."""
    from .train import evaluate

    acc: dict[str, dict[str, float]] = {"val": {}, "test": {}}
    with progress.task("accuracy float vs int8", total=len(models) * len(acc)) as bar, quiet():
        for split in acc:
            for name, model in models.items():
                acc[split][name] = evaluate(model, data.split(split))
                bar.advance(1)
    return acc


def _metrics(acc: dict[str, dict[str, float]], qmodel: nn.Module, tensors: dict[str, torch.Tensor],
             ckpt: Any) -> dict[str, Any]:
    """The int8 checkpoint's metrics: its accuracy (and the float one), parameters, sizes."""
    from .checkpoint import size_on_disk

    counts = parameter_counts(qmodel)
    return {"val_acc": acc["val"]["int8"], "test_acc": acc["test"]["int8"],
            "float_val_acc": acc["val"]["float"], "float_test_acc": acc["test"]["float"],
            "params": counts["int8"] + counts["float"], "int8_fraction": int8_fraction(qmodel),
            "size_bytes": _safetensors_bytes(tensors), "float_size_bytes": size_on_disk(ckpt.path)}


def quantize(cfg: Any, progress: Progress = NULL) -> QuantizeResult:
    """``mhsa quantize``: dynamic int8 quantization of a float checkpoint.

    Args:
        cfg: a :class:`~mhsa_cli.config.QuantizeConfig`.
        progress: receives a bar for the accuracy evaluation.

    Returns:
        :class:`QuantizeResult`: engine, what is int8 and what stayed float,
        sizes on disk and in memory, validation/test accuracy float vs int8.

    Raises:
        MhsaError: unknown backend or engine, an engine this machine lacks, an
            int8 or corrupt input checkpoint, an existing output folder. Nothing
            is written then.

    Example:
        >>> quantize(build_config(QuantizeConfig, {"checkpoint": "runs/baseline", "out": "runs/int8"}))
    """
    from .checkpoint import load_model, make_meta, save_checkpoint, size_on_disk
    from .config import to_dict
    from .environment import set_threads
    from .tasks import task_from_spec

    backend = BACKENDS[choice("quantization backend", cfg.backend, BACKENDS)]
    engine = resolve_engine(cfg.engine)
    threads = set_threads(cfg.threads)
    ckpt = _load_source(cfg)
    float_model = load_model(ckpt)
    include = linear_names(float_model, cfg.classifier)
    qmodel = backend.quantize(float_model, engine, cfg.per_channel, include).eval()
    acc = _accuracy({"float": float_model, "int8": qmodel}, task_from_spec(ckpt.task_spec), progress)
    tensors, kept = backend.state(qmodel), float_parts(qmodel)
    settings = {"backend": backend.name, "engine": engine, "engine_requested": cfg.engine,
                "per_channel": cfg.per_channel, "classifier": cfg.classifier, "dtype": "qint8",
                "modules": include, "float_modules": [p["name"] for p in kept],
                "int8_fraction": int8_fraction(qmodel)}
    with use_engine(engine):  # so the recorded environment names the engine used
        meta = make_meta("int8", ckpt.model_config, ckpt.task_spec, "quantize",
                         {**to_dict(cfg), "engine_resolved": engine}, _metrics(acc, qmodel, tensors, ckpt),
                         parent=ckpt, extra={"quantization": settings})
    save_checkpoint(cfg.out, tensors, meta, force=cfg.force)
    counts = parameter_counts(qmodel)
    return QuantizeResult(
        out=str(cfg.out), source=str(ckpt.path), backend=backend.name, engine=engine,
        engine_requested=cfg.engine, per_channel=cfg.per_channel, threads=threads,
        quantized_modules=include, float_modules=kept, params_int8=counts["int8"],
        params_float=counts["float"], int8_fraction=settings["int8_fraction"],
        size_bytes_float=size_on_disk(ckpt.path), size_bytes_int8=size_on_disk(cfg.out),
        weight_bytes_float=model_weight_bytes(float_model), weight_bytes_int8=model_weight_bytes(qmodel),
        accuracy=acc)
