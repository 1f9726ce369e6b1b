"""Dynamic int8 quantization of every ``nn.Linear``, behind a small backend interface.

What is quantized: the q/k/v/o projections of every attention layer, both
feed-forward layers, the feature projection of feature models, and (unless
``--no-classifier``) the classifier; and (unless ``--no-embeddings``) each token
embedding table of at least 1,024 values, weight-only with one scale per row
(:mod:`.rowwise`). Positions, small tables, the CLS token, layer norms and the
bias of 0-head layers stay float.

Weights are int8 with per-tensor (or per-output-channel) scales; activations
are quantized on the fly per batch by the kernel ("dynamic"), so no
calibration data is needed. The kernels exist for the CPU only. An int8 table's
lookup gathers int8 rows and scales them back to float.

* :mod:`.engines` -- :data:`ENGINES`, ``--engine auto`` (:func:`resolve_engine`).
* :mod:`.backend` -- the :class:`Backend` interface, :class:`TorchAoDynamicBackend`,
  the int8 checkpoint layout and its load path (:func:`rebuild_quantized`).
* :mod:`.rowwise` -- :func:`rowwise_int8` and :class:`Int8Embedding` (shared with the ORT int8 export).
* :mod:`.measures` -- weight bytes, int8 / float parameter counts, what stays float.
* :mod:`.command` -- :func:`quantize` (``mhsa quantize``) and :class:`QuantizeResult`.

Everything public is importable from here (``from mhsa_cli.quantize import X``).
"""

from __future__ import annotations

from .backend import (BACKENDS, CLASSIFIER, CPU_ONLY, QPARAM_SUFFIXES, Backend, TorchAoDynamicBackend,
                      backend_of, lean_linear_type, linear_names, rebuild_quantized, settings_of)
from .command import QuantizeResult, quantize
from .engines import (AUTO_ORDER, ENGINES, cpu_family, engine_here, quiet, resolve_engine, supported_engines,
                      use_engine)
from .measures import export_state, float_parts, int8_fraction, model_weight_bytes, parameter_counts
from .rowwise import EMBED_MIN_ELEMENTS, Int8Embedding, embedding_names, rowwise_int8

__all__ = [
    "AUTO_ORDER", "BACKENDS", "CLASSIFIER", "CPU_ONLY", "EMBED_MIN_ELEMENTS", "ENGINES", "QPARAM_SUFFIXES", "Backend",
    "Int8Embedding", "QuantizeResult", "TorchAoDynamicBackend", "backend_of", "cpu_family", "embedding_names",
    "engine_here", "export_state", "float_parts",
    "int8_fraction", "lean_linear_type", "linear_names", "model_weight_bytes", "parameter_counts", "quantize", "quiet",
    "rebuild_quantized", "resolve_engine", "rowwise_int8", "settings_of", "supported_engines", "use_engine",
]
