"""Model size and memory: weight bytes in memory, weight counts, CUDA peak memory.

Dynamic-quantized ``Linear`` layers are counted with their int8 values plus
scales and zero points; :func:`weight_bytes` is
:func:`mhsa_cli.quantize.model_weight_bytes` (one definition for the project).
"""

from __future__ import annotations

import torch
from torch import nn

from ..quantize import model_weight_bytes, parameter_counts


def weight_bytes(model: nn.Module) -> int:
    """In-memory bytes of a model's weights (float tensors, int8 values + scales), as stored.

    The one definition of the project: :func:`mhsa_cli.quantize.model_weight_bytes`.
    """
    return model_weight_bytes(model)


def count_weights(model: nn.Module) -> int:
    """Weight elements: float parameters + int8 weights / biases of quantized Linear layers
    (:func:`mhsa_cli.quantize.parameter_counts`; scales and zero points not counted)."""
    return sum(parameter_counts(model).values())


def cuda_peak_memory_bytes(model: nn.Module, x: torch.Tensor, device: torch.device) -> int:
    """Peak CUDA memory of one forward pass of ``model`` alone: weights + input + activations.

    Measured with ``torch.cuda.max_memory_allocated`` above what was allocated
    before the model was moved to the GPU; other models must be off the GPU.
    The model is moved to ``device`` and back to the CPU.
    """
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    model.to(device)
    with torch.inference_mode():
        model(x.to(device))
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    model.to("cpu")
    return int(peak)

