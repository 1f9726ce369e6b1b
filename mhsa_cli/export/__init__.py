"""Export to ONNX, with ONNX Runtime's dynamic int8, checked against the source.

* :mod:`.onnx` -- torch -> ONNX (:func:`to_onnx`), ONNX -> int8
  (:func:`quantize_onnx`), op counts of a graph and of ORT's optimised graph.
* :mod:`.command` -- :func:`export` (``mhsa export``), :class:`ExportResult`,
  :func:`write_export` (the files only; ``mhsa bench`` uses it for temporary exports).

The folder format (export.json) lives in :mod:`mhsa_cli.runtimes.folder`, below
the runtimes that read it.
"""

from __future__ import annotations

from .command import ExportResult, export, write_export
from .onnx import INT8_OPS, check_int8_graph, op_counts, optimized_op_counts, quantize_onnx, to_onnx

__all__ = ["INT8_OPS", "ExportResult", "check_int8_graph", "export", "op_counts", "optimized_op_counts",
           "quantize_onnx", "to_onnx", "write_export"]
