"""Model size and memory: weight bytes in memory, weight counts, CUDA peak memory.

Dynamic-quantized ``Linear`` layers are counted with their int8 values plus
scales and zero points; :func:`weight_bytes` defers to
``mhsa_cli.quantize.model_weight_bytes`` when that exists (one definition for
the project).
"""

from __future__ import annotations

import torch
from torch import nn



def _is_dynamic_quantized_linear(module: nn.Module) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return isinstance(module, DynamicQuantizedLinear)


def _tensor_bytes(t: torch.Tensor | None) -> int:
    """Bytes of a tensor; for a quantized one: int8 values + its scales and zero points."""
    if t is None:
        return 0
    n = t.numel() * t.element_size()
    if t.is_quantized:
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                           torch.per_channel_affine_float_qparams):
            s, z = t.q_per_channel_scales(), t.q_per_channel_zero_points()
            n += s.numel() * s.element_size() + z.numel() * z.element_size()
        else:
            n += 8 + 8  # one double scale, one int64 zero point
    return n


def _own_weight_bytes(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        if _is_dynamic_quantized_linear(m):
            total += _tensor_bytes(m.weight()) + _tensor_bytes(m.bias())
        for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
            total += _tensor_bytes(t)
    return total


def weight_bytes(model: nn.Module) -> int:
    """In-memory bytes of a model's weights (float tensors, int8 values + scales).

    Uses ``mhsa_cli.quantize.model_weight_bytes`` when that exists (one
    definition for the project), else counts parameters and buffers plus the
    packed weights of dynamic-quantized ``Linear`` layers.
    """
    try:
        from ..quantize import model_weight_bytes
    except ImportError:
        return _own_weight_bytes(model)
    return int(model_weight_bytes(model))


def count_weights(model: nn.Module) -> int:
    """Weight elements: float parameters + int8 weights / biases of quantized Linear layers."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if _is_dynamic_quantized_linear(m):
            bias = m.bias()
            n += m.weight().numel() + (bias.numel() if bias is not None else 0)
    return n


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

