"""Machine and library facts recorded in every output (reproducibility)."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else platform)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, CPU, threads, quantized engine and GPU (if any)."""
    from . import __version__

    env: dict[str, Any] = {
        "mhsa": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_pruning": package_version("torch-pruning"),
        "safetensors": package_version("safetensors"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "quantized_engine": torch.backends.quantized.engine,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
    return env


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if present else cpu; ``cuda`` without a GPU is an error.

    Raises:
        MhsaError: unknown device, or CUDA asked for but absent.
    """
    from .errors import MhsaError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise MhsaError(f"unknown device '{device}'; choose from: auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise MhsaError("--device cuda was asked for, but no CUDA GPU is available here (torch "
                        f"{torch.__version__}, cuda={torch.version.cuda}); use --device cpu")
    return torch.device(device)


def set_threads(threads: int) -> int:
    """Fix torch's intra-op thread count (0 = leave torch's default). Returns the count used."""
    from .errors import MhsaError

    if threads < 0:
        raise MhsaError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
