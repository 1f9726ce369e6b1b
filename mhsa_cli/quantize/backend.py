"""The backend interface and int8 storage: quantize, export for safetensors, rebuild.

A backend (today :class:`TorchAoDynamicBackend`: the deprecated but fast eager
``torch.ao.quantization.quantize_dynamic``) does three things: quantize a float
model, export its tensors for safetensors (:meth:`~Backend.state`), and rebuild
a quantized model from those tensors without pickle (:meth:`~Backend.rebuild`).
Another backend can replace it by registering in :data:`BACKENDS`.

Checkpoint layout (kind ``int8``): for each quantized Linear ``name``:
``name.weight`` int8 (out, in), ``name.weight_scale`` float32 (1,) or (out,),
``name.weight_zero_point`` int64 (same shape), ``name.bias`` float32 (out,);
for each int8 embedding table ``name`` (:class:`~.rowwise.Int8Embedding`, weight-only):
``name.weight`` int8 (V, D), ``name.weight_scale`` float32 (V, 1);
every other tensor as in a float checkpoint. The settings needed to rebuild
(backend, engine, per-channel, module list, embedding list) are in ``checkpoint.json`` ->
``extra.quantization`` (:func:`settings_of`); :func:`rebuild_quantized` is the
load path of int8 checkpoints. (An int8 model runs on the CPU only: ``mhsa bench --devices cuda`` reports it as not timed.)
"""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import MhsaError
from .engines import ENGINES, engine_here, quiet, use_engine
from .rowwise import Int8Embedding
from .torch_private import dynamic_linear_type, linear_dynamic, make_qint8_weight, weight_bias

CLASSIFIER = "head"  # module name of the classifier in MHSAClassifier
QPARAM_SUFFIXES = (".weight_scale", ".weight_zero_point")  # metadata, not parameters
CPU_ONLY = "int8 checkpoints run on CPU only (dynamic int8 kernels have no CUDA path)"


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
                 include: list[str], embeddings: tuple[str, ...] = ()) -> nn.Module:
        """A quantized copy of float ``model``: the Linear modules named in ``include``, the
        embedding tables named in ``embeddings`` (:class:`~.rowwise.Int8Embedding`)."""

    def quantized_names(self, model: nn.Module) -> list[str]:
        """Names of the modules of ``model`` that hold int8 weights (empty: not ours)."""

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Safetensors-ready tensors: int8 weights, scales, zero points, float rest."""

    def rebuild(self, float_model: nn.Module, tensors: dict[str, torch.Tensor],
                settings: dict[str, Any]) -> nn.Module:
        """Turn a freshly built float model into the stored quantized one (no pickle)."""


_ao_linear_type = dynamic_linear_type  # torch.ao's dynamic int8 Linear (a private-API module owns it)


@cache
def lean_linear_type() -> type:
    """torch.ao's dynamic int8 Linear with a leaner ``forward`` (same kernel, same result).

    torch.ao's ``forward`` checks the weight dtype and module version and casts the
    output on every call: about 4 us of Python per Linear, which is a third of the
    kernel's own time at batch 1 on a small model (measured: 22.0 -> 17.5 us for a
    25 x 64 -> 64 Linear, 1 thread). Only qint8 weights with ``reduce_range`` (what
    torch.ao uses for qint8, version 4) are made here, so those checks are moot.
    """
    base = _ao_linear_type()

    class DynamicInt8Linear(base):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # (..., in) float -> (..., out) float; activations quantized per call (quint8)
            return linear_dynamic(x, self)

    DynamicInt8Linear.__module__ = __name__
    return DynamicInt8Linear


class TorchAoDynamicBackend:
    """``torch.ao.quantization.quantize_dynamic`` (qint8 weights, quint8 activations),
    producing :func:`lean_linear_type` modules."""

    name = "torch-ao"

    def quantize(self, model: nn.Module, engine: str, per_channel: bool,
                 include: list[str], embeddings: tuple[str, ...] = ()) -> nn.Module:
        with quiet():
            from torch.ao.quantization import (default_dynamic_qconfig, per_channel_dynamic_qconfig,
                                               quantize_dynamic)

            qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
            with use_engine(engine):
                q = quantize_dynamic(model, {n: qconfig for n in include}, dtype=torch.qint8, inplace=False,
                                     mapping={nn.Linear: lean_linear_type()})
        done = self.quantized_names(q)
        if sorted(done) != sorted(include):  # finish the surgery here, or fail loudly
            raise RuntimeError(f"quantize_dynamic quantized {done}, expected {include}")
        for name in embeddings:
            _set_submodule(q, name, Int8Embedding.from_float(q.get_submodule(name)))
        return q

    def quantized_names(self, model: nn.Module) -> list[str]:
        linear = _ao_linear_type()  # torch.ao's own modules count too (same tensors)
        return [n for n, m in model.named_modules() if isinstance(m, linear)]

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        qnames = set(self.quantized_names(model))
        out = {k: v.detach() for k, v in model.state_dict().items() if not _inside(k, qnames)}
        for name in sorted(qnames):
            out.update(self._export(name, model.get_submodule(name)))
        return out

    @staticmethod
    def _export(name: str, module: nn.Module) -> dict[str, torch.Tensor]:
        w, b = weight_bias(module)  # qint8 (out, in), float (out,) or None
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
        include, embeddings = list(settings["modules"]), list(settings.get("embeddings", []))
        linears = {n: _float_linear(float_model, n) for n in include}
        for n in embeddings:  # before the float part: their tensors are int8 and are not loaded there
            _set_submodule(float_model, n, _int8_embedding(float_model, n, tensors))
        _load_float_part(float_model, tensors, include + embeddings)
        expected = {k for n, m in linears.items() for k in _quant_keys(n, m)}
        expected |= {f"{n}{suffix}" for n in embeddings for suffix in (".weight", ".weight_scale")}
        extra = sorted(k for k in tensors if _inside(k, set(include + embeddings)) and k not in expected)
        if extra:
            raise MhsaError(f"unexpected tensor {extra[0]}")
        with quiet(), use_engine(settings["engine"]):  # weights are packed for this engine
            for n, lin in linears.items():
                _set_submodule(float_model, n, self._module(n, lin, tensors, settings["per_channel"]))
        return float_model

    def _module(self, name: str, lin: nn.Linear, tensors: dict[str, torch.Tensor],
                per_channel: bool) -> nn.Module:
        """A dynamic int8 Linear holding the stored weight and bias of ``name``."""
        q = lean_linear_type()(lin.in_features, lin.out_features, bias_=lin.bias is not None, dtype=torch.qint8)
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


def _int8_embedding(model: nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> Int8Embedding:
    """The stored int8 table of embedding ``name``, checked against the float module it replaces."""
    try:
        m = model.get_submodule(name)
    except AttributeError:
        m = None
    if type(m) is not nn.Embedding:
        raise MhsaError(f"int8 embedding '{name}' is not an Embedding layer of this architecture")
    out = Int8Embedding(m.num_embeddings, m.embedding_dim, m.padding_idx)
    q = _tensor(tensors, f"{name}.weight", tuple(m.weight.shape), torch.int8)
    scale = _tensor(tensors, f"{name}.weight_scale", (m.num_embeddings, 1), torch.float32)
    if (scale <= 0).any():
        raise MhsaError(f"{name}: scales must be > 0")
    out.weight, out.weight_scale = q.clone(), scale.clone()
    return out


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
    return make_qint8_weight(w, scale, zp, per_channel)


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


# --------------------------------------------------------------------------- load path

def settings_of(ckpt: Any) -> dict[str, Any]:
    """The quantization settings stored in an int8 checkpoint, validated.

    Raises:
        MhsaError: missing or malformed ``extra.quantization``.
    """
    from ..checkpoint import META

    extra = ckpt.meta.get("extra")
    s = extra.get("quantization") if isinstance(extra, dict) else None
    where = f"checkpoint {ckpt.path}: {META}"
    if not isinstance(s, dict):
        raise MhsaError(f"{where} has no extra.quantization settings")
    checks = {"backend": lambda v: v in BACKENDS, "engine": lambda v: v in ENGINES and v != "auto",
              "per_channel": lambda v: isinstance(v, bool),
              "modules": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v)}
    optional = {"embeddings": checks["modules"]}  # absent in checkpoints made before int8 tables: none
    for key, ok in checks.items():
        if key not in s or not ok(s[key]):
            raise MhsaError(f"{where}: extra.quantization.{key} is missing or invalid ({s.get(key)!r})")
    for key, ok in optional.items():
        if key in s and not ok(s[key]):
            raise MhsaError(f"{where}: extra.quantization.{key} is missing or invalid ({s.get(key)!r})")
    return s


def rebuild_quantized(ckpt: Any) -> nn.Module:
    """Rebuild the quantized model of an int8 checkpoint, without pickle.

    The float model is built from the JSON architecture, its float tensors are
    loaded strictly, and each listed Linear is replaced by a quantized one whose
    weight is made from the stored int8 values, scales and zero points. Weights
    are packed for the recorded engine, or for ``auto`` where that engine is not
    supported on this machine: the stored int8 values are engine-independent, the
    outputs are not (see :func:`~mhsa_cli.quantize.engines.engine_here`), so a
    fallback is warned about and recorded as ``engine_recorded``.

    Args:
        ckpt: a loaded :class:`~mhsa_cli.checkpoint.Checkpoint` of kind int8.

    Returns:
        The model in eval mode on the CPU; ``model.quantization`` holds the settings.

    Raises:
        MhsaError: malformed settings or tensors that disagree with the JSON.
    """
    from ..model import build_model

    settings = dict(settings_of(ckpt))
    recorded, settings["engine"] = settings["engine"], engine_here(settings["engine"])
    if settings["engine"] != recorded:
        settings["engine_recorded"] = recorded
    try:
        model = BACKENDS[settings["backend"]].rebuild(build_model(ckpt.model_config), ckpt.tensors, settings)
    except (MhsaError, RuntimeError, ValueError) as exc:  # torch rejects what our checks missed
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MhsaError(f"checkpoint {ckpt.path}: {first}") from None
    model.quantization = settings
    return model.eval()
