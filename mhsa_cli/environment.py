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


# /proc/cpuinfo flags that decide which kernels torch picks (float GEMM, int8 GEMM)
KERNEL_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve")


def cpu_flags() -> list[str]:
    """The CPU's kernel-relevant instruction-set flags (:data:`KERNEL_FLAGS` found in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in KERNEL_FLAGS if flag in have]
    except OSError:
        pass
    return []


def measurement_environment(threads: int = 0, devices: tuple[str, ...] | list[str] = ("cpu",)) -> dict[str, Any]:
    """What a latency measurement depends on beyond its settings: torch build, CPU, threads, GPU.

    A recipe's bench stage records this; a rerun re-measures when it differs
    (``mhsa run`` after switching torch builds or machines).

    Args:
        threads: the stage's thread setting (0 = torch's default, resolved here).
        devices: the devices timed (a GPU's name counts only when cuda is among them).

    Returns:
        A JSON-able dict: torch version and build (git hash, CUDA version), CPU
        model, ISA level torch dispatches to, kernel flags, cores, threads and
        the quantized engine; with cuda, the GPU name.
    """
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: None)()
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "torch_cuda": torch.version.cuda,
        "cpu": cpu_model(),
        "cpu_capability": capability,
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "quantized_engine": torch.backends.quantized.engine,
    }
    if "cuda" in devices and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"torch 2.13.0 -> 2.14.1, threads 2 -> 1"``: how two environment records differ."""
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    return ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys)


def busy_warning(threads: int = 0, load: float | None = None, cores: int | None = None,
                 flag: str = "--threads {n}") -> str | None:
    """A warning before long timing work when the machine is busy (1-minute load above its cores).

    Args:
        threads: the threads the work will use (0 = torch's default).
        load: the 1-minute load average (default: ``os.getloadavg()``; None where unsupported).
        cores: logical CPUs (default: ``os.cpu_count()``).
        flag: how to ask for fewer threads where the warning is shown ({n}: the count),
            e.g. ``--set defaults.threads={n}`` for a recipe.

    Returns:
        One line naming the load and suggesting fewer threads (``--threads``), or
        None when the load is at most the core count or cannot be read.
    """
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # Windows: no load average
            return None
    cores = cores or os.cpu_count() or 1
    if load <= cores:
        return None
    used = threads or torch.get_num_threads()
    fewer = max(1, min(used, cores) // 2) if used > 1 else 1
    hint = (f"pass {flag.format(n=fewer)} (fewer threads wait less on a shared CPU) or rerun when it is idle"
            if used > 1 else "rerun when it is idle")
    return (f"warning: the machine is busy (load {load:.1f} on {cores} cores): expect slow runs and noisy "
            f"timings; {hint}")


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
