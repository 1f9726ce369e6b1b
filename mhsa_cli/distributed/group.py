"""Process group and failure handling under ``torchrun``.

Who am I (:func:`env_world_size`, :func:`env_rank`, :func:`is_distributed`,
:func:`world_size`, :func:`rank`, :func:`is_main`); the group's lifetime
(:func:`setup`, :func:`teardown`, :func:`launched` for a CLI command, with
:data:`SCALABLE` and the :data:`TIMEOUT_ENV` timeout); rank-0-only work
(:func:`on_rank0`, :func:`local`, whose depth counter ``_LOCAL`` lives here
alone); and the same error on every rank (:func:`agree`, :class:`UniformError`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as tdist

from ..errors import MhsaError

T = TypeVar("T")

#: Commands that may run under torchrun; the others refuse with one line. ``run``
#: trains on every rank and runs its other stages on rank 0 alone (:func:`on_rank0`).
SCALABLE = ("train", "distill", "run")
#: Environment variable: seconds a process waits for its peers (init and collectives).
TIMEOUT_ENV = "MHSA_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 120.0
_MESSAGE_BYTES = 2048
_LOCAL = {"depth": 0}


class UniformError(MhsaError):
    """Bad input that every process raised alike: rank 0 reports it, the others exit quietly."""


# --------------------------------------------------------------------------- who am I

def env_world_size() -> int:
    """Processes in the job as the launcher announced them (``WORLD_SIZE``, default 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """This process's rank as the launcher announced it (``RANK``, default 0)."""
    return int(os.environ.get("RANK", "0") or 0)


def is_distributed() -> bool:
    """A process group is up and this code is not inside :func:`local`."""
    return tdist.is_available() and tdist.is_initialized() and not _LOCAL["depth"]


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and prints.

    Before the group is up, the launcher's ``RANK`` decides (only when ``WORLD_SIZE`` > 1).
    """
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank() == 0
    return env_world_size() <= 1 or env_rank() == 0


# --------------------------------------------------------------------------- lifetime

def device_type(device: str) -> str:
    """``cpu`` or ``cuda`` for a ``--device`` value (``auto`` = cuda if present)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if str(device).startswith("cuda") else "cpu"


def timeout_s() -> float:
    """Seconds to wait for peers (``MHSA_DIST_TIMEOUT``, default 120)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UniformError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise UniformError(f"{TIMEOUT_ENV} must be > 0, got {raw!r}")
    return value


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def setup(device_type: str = "cpu") -> bool:
    """Join the process group that torchrun announced in the environment.

    A no-op (returns False) in one process (``WORLD_SIZE`` unset or 1) or when a
    group is already up. CPU: gloo. CUDA: this process uses GPU ``LOCAL_RANK``,
    NCCL carries CUDA tensors and gloo the small CPU collectives. Also sets torch's
    CPU threads to ``cores // LOCAL_WORLD_SIZE`` (``--threads`` overrides later).

    Args:
        device_type: ``cpu`` or ``cuda`` (see :func:`device_type`).

    Returns:
        True if this call started a group (call :func:`teardown` at the end).

    Raises:
        UniformError: launcher variables missing, or fewer GPUs than local processes.
    """
    if env_world_size() <= 1 or (tdist.is_available() and tdist.is_initialized()):
        return False
    if not tdist.is_available():
        raise UniformError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise UniformError(f"WORLD_SIZE={env_world_size()} is set but {', '.join(missing)} "
                           "is not: launch with torchrun (see docs/distributed.md)")
    backend = "gloo"
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", str(env_world_size())))
    if device_type == "cuda":
        # every rank checks the same numbers, so all refuse alike before any collective (rank 0,
        # whose GPU exists, would otherwise wait at init for a peer that has already left)
        gpus = torch.cuda.device_count()
        if local_procs > gpus:
            raise UniformError(f"{local_procs} processes on this node need {local_procs} CUDA GPUs (one each), "
                               f"but {gpus} {'is' if gpus == 1 else 'are'} visible; use --nproc-per-node {gpus} "
                               "or --device cpu")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    tdist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
    torch.set_num_threads(max(1, _cores() // max(1, local_procs)))
    return True


def teardown() -> None:
    """Leave the process group (no-op if none is up)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


@contextmanager
def launched(command: str, device: str | Callable[[], str] = "auto") -> Iterator[None]:
    """Run a CLI command in one process, or as one rank of a torchrun job.

    ``device`` (a ``--device`` value, or a function returning one, called only under
    torchrun: ``mhsa run`` derives it from its recipe) decides gloo or NCCL.

    Under torchrun: refuses commands not in :data:`SCALABLE`, starts the group,
    always tears it down, makes non-zero ranks exit quietly (code 2) on a
    :class:`UniformError` (rank 0 prints it), and prefixes other input errors
    with the rank that hit them.
    """
    if env_world_size() <= 1:
        yield
        return
    started = False
    try:
        if command not in SCALABLE:
            raise UniformError(f"`mhsa {command}` runs in one process; launch it without torchrun "
                               f"(these scale out: {', '.join(SCALABLE)})")
        if callable(device):
            try:
                device = device()
            except MhsaError as exc:  # the same input on every rank: the same error, printed once
                raise UniformError(str(exc)) from None
        started = setup(device_type(device))
        yield
        if started:  # leave together: a rank tearing gloo down while a peer still
            tdist.barrier()  # talks to it can abort that peer (seen once as SIGABRT)
    except UniformError:
        if env_rank() != 0:
            raise SystemExit(2) from None
        raise
    except MhsaError as exc:
        if env_rank() != 0:
            raise MhsaError(f"rank {env_rank()}: {exc}") from None
        raise
    finally:
        if started:
            teardown()


def on_rank0(fn: Callable[[], T], key: str, wait_s: float = 7 * 24 * 3600.0) -> T | None:
    """Run ``fn`` on rank 0 alone (as one process) while the other ranks wait.

    The others wait on the group's key-value store, not in a collective, so rank
    0's work may take longer than the group timeout (a bench, a pruning sweep).
    Rank 0's :class:`MhsaError` reaches every rank.

    Returns:
        ``fn``'s result on rank 0, None elsewhere (or in one process: ``fn()``).
    """
    if not is_distributed():
        return fn()
    store = tdist.distributed_c10d._get_default_store()
    key = f"mhsa/{key}"
    if is_main():
        try:
            with local():
                result = fn()
        except MhsaError as exc:
            store.set(key, f"error:{exc}")
            raise
        except BaseException:
            store.set(key, "error:rank 0 failed (see its output)")
            raise
        store.set(key, "ok")
        return result
    store.wait([key], timedelta(seconds=wait_s))
    status = store.get(key).decode()
    if status.startswith("error:"):
        raise UniformError(status[len("error:"):])
    return None


@contextmanager
def local() -> Iterator[None]:
    """Inside this block the process acts alone: every helper here is a no-op.

    For work that only rank 0 does while a group is up (e.g. benchmarking a
    checkpoint inside ``mhsa run``), so that :func:`evaluate`-style helpers do
    not shard the data or wait for peers that are not there.
    """
    _LOCAL["depth"] += 1
    try:
        yield
    finally:
        _LOCAL["depth"] -= 1


# --------------------------------------------------------------------------- agreeing

def _encode(message: str) -> torch.Tensor:
    """UTF-8 bytes, zero padded to a fixed length (a CPU tensor that gloo can broadcast)."""
    data = message.encode("utf-8")[:_MESSAGE_BYTES]
    buf = torch.zeros(_MESSAGE_BYTES, dtype=torch.uint8)
    buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    return buf


def _decode(buf: torch.Tensor) -> str:
    return bytes(buf.tolist()).rstrip(b"\0").decode("utf-8", errors="replace")


def agree(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on every rank; if it raises :class:`MhsaError` on any, raise on all.

    Call it for validation and loading before the first collective of a stage,
    so that bad input seen by one rank (rank 0's output-folder check, a file
    missing on one node) makes every rank fail the same way instead of leaving
    the others waiting in a collective.

    Returns:
        ``fn``'s result.

    Raises:
        MhsaError: in one process, ``fn``'s own error.
        UniformError: under torchrun, the lowest failing rank's message on every rank
            (prefixed ``rank k:`` when k > 0).
    """
    try:
        result, error = fn(*args, **kwargs), None
    except MhsaError as exc:
        if not is_distributed():
            raise
        result, error = None, exc
    if not is_distributed():
        return result
    me, n = rank(), world_size()
    first = torch.tensor([me if error is not None else n], dtype=torch.int64)
    tdist.all_reduce(first, op=tdist.ReduceOp.MIN)
    src = int(first.item())
    if src == n:
        return result
    buf = _encode(str(error) if me == src else "")
    tdist.broadcast(buf, src=src)
    message = _decode(buf)
    raise UniformError(message if src == 0 else f"rank {src}: {message}")
