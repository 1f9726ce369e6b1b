"""Data-parallel training under ``torchrun`` (DistributedDataParallel).

One process is the default: then every helper here is a no-op, and the training
loop calls them unconditionally. Launched by PyTorch's own launcher::

    torchrun --nproc-per-node 2 -m mhsa_cli train --out runs/ddp

the environment holds ``WORLD_SIZE`` > 1 (and ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); the CLI then wraps the command in
:func:`launched`, which calls :func:`setup` (gloo on CPU; NCCL for CUDA tensors,
with gloo kept for the small CPU collectives) and :func:`teardown`.

Semantics (see ``docs/distributed.md``):

* ``--batch-size`` is the **global** batch: each of the ``world_size`` processes
  takes ``batch_size / world_size`` samples per step (an error if it does not
  divide), and DDP averages the gradients. The same flags therefore run the same
  recipe (same steps per epoch, same schedule) as one process: when ``n_train``
  is divisible by the world size, every optimiser step sees exactly the samples
  of the one-process step, and results differ only by float summation order.
* Training order: :class:`torch.utils.data.DistributedSampler` (shuffle, seed,
  ``set_epoch`` every epoch). Its permutation is the one the single-process loop
  always used, so one process keeps its batch order bit for bit. When ``n_train``
  is not divisible by the world size the sampler repeats up to
  ``world_size - 1`` samples per epoch (PyTorch's standard padding).
* Evaluation: each process scores every ``world_size``-th sample (no padding, so
  each sample counts once) and the correct counts are summed over processes, so
  all ranks get the same accuracy and make the same best-epoch and early-stop
  decisions.
* Rank 0 alone checks and writes the output folder, draws progress bars and
  renders the report; the saved weights are the plain model's (no ``module.``
  prefix), so a DDP-trained checkpoint loads in one process.
* Bad input: :func:`agree` runs a preparation step on every rank and, if it
  fails on any rank, raises the same :class:`UniformError` on all of them before
  any other collective, so every process exits with code 2 and only rank 0
  prints the one-line message. A process that dies mid-run closes its gloo
  sockets (its peers' collectives fail at once) and torchrun stops the others;
  :data:`TIMEOUT_ENV` bounds any remaining wait (default 120 s).
* Threads: each process uses ``cores // processes on this node`` unless
  ``--threads`` says otherwise (torchrun's own default is 1).
* Seeds: every rank builds the same initial model from ``--seed`` (DDP also
  broadcasts rank 0's weights); ranks > 0 then switch to their own random stream
  so that their dropout masks differ (:func:`decorrelate_rng`).
* Commands: ``train``, ``distill`` and ``run`` scale out (:data:`SCALABLE`);
  in ``run`` the training stages use every rank and the other stages run on
  rank 0 alone (:func:`on_rank0`). The others refuse under torchrun with one
  line instead of running N copies that race on the same output folder.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch
import torch.distributed as tdist
from torch import nn

from .errors import MhsaError

T = TypeVar("T")

#: Commands that may run under torchrun; the others refuse with one line. ``run``
#: joins once recipe.py runs its non-training stages (and writes its own files) on
#: rank 0 only, e.g. inside :func:`local` followed by :func:`barrier`.
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
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UniformError(f"LOCAL_RANK {local} needs GPU {local}, but only "
                               f"{torch.cuda.device_count()} CUDA GPU(s) are visible")
        torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"
    tdist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", str(env_world_size())))
    torch.set_num_threads(max(1, _cores() // max(1, local_procs)))
    return True


def teardown() -> None:
    """Leave the process group (no-op if none is up)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


@contextmanager
def launched(command: str, device: str = "auto") -> Iterator[None]:
    """Run a CLI command in one process, or as one rank of a torchrun job.

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


# --------------------------------------------------------------------------- data

def local_batch_size(global_batch: int) -> int:
    """Per-process batch size for a global ``--batch-size``.

    Raises:
        UniformError: ``global_batch`` is not divisible by the number of processes.
    """
    n = world_size()
    if global_batch % n:
        raise UniformError(f"--batch-size {global_batch} is the global batch and must be divisible by "
                           f"the {n} processes (e.g. {max(n, global_batch // n * n)})")
    return global_batch // n


def sampler(n: int, seed: int, epoch: int, num_replicas: int | None = None,
            rank_: int | None = None) -> torch.utils.data.DistributedSampler:
    """The training sampler: shuffled by ``(seed, epoch)``, padded to equal shards.

    ``seed`` is the sampler's base seed; its permutation is
    ``torch.randperm(n, generator=manual_seed(seed + epoch))``.
    """
    from torch.utils.data import DistributedSampler

    s = DistributedSampler(range(n), num_replicas=num_replicas or world_size(),
                           rank=rank() if rank_ is None else rank_, shuffle=True, seed=seed,
                           drop_last=False)
    s.set_epoch(epoch)
    return s


def train_order(n: int, seed: int, epoch: int, num_replicas: int | None = None,
                rank_: int | None = None) -> torch.Tensor:
    """This process's sample indices for one training epoch (see :func:`sampler`)."""
    return torch.tensor(list(iter(sampler(n, seed, epoch, num_replicas, rank_))), dtype=torch.long)


def shard(order: torch.Tensor) -> torch.Tensor:
    """This process's share of an index order, without padding (every ``world_size``-th item).

    Used for evaluation, where each sample must count exactly once.
    """
    return order[rank():: world_size()] if is_distributed() else order


# --------------------------------------------------------------------------- collectives

def all_reduce_sum(value: Any) -> Any:
    """Sum a number, or each number of a list/tuple, over all processes (identity in one).

    Sums run in float64, so integer counts stay exact; the type of each item is kept.
    """
    if not is_distributed():
        return value
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    t = torch.tensor([float(v) for v in items], dtype=torch.float64)
    tdist.all_reduce(t)
    out = [type(v)(s) for v, s in zip(items, t.tolist())]
    return type(value)(out) if isinstance(value, (list, tuple)) else out[0]


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over processes for tensors that DDP does not own.

    (e.g. distillation projections trained next to the model). One collective.
    """
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def local_device(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK``'s device (set by :func:`setup`); others unchanged."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The module to train: DDP-wrapped under torchrun, else ``model`` itself.

    ``static_graph=True``: the training graph is the same every step (one loss
    function per :func:`mhsa_cli.train.fit` call), so DDP learns in the first step
    which parameters get no gradient and skips them afterwards, without
    ``find_unused_parameters``' graph walk every step. Needed because some
    parameters legitimately get none: the ``ln1`` of a zero-head layer (after
    pruning) feeds an attention that only adds its bias. A loss whose set of used
    parameters changes from step to step is not supported. Tensors outside the
    model (``extra_params`` of :func:`mhsa_cli.train.fit`) are averaged by
    :func:`average_gradients`. Keyword arguments (``features=True``,
    ``output_attentions=True``) pass through DDP's ``forward``, and the
    :class:`~mhsa_cli.model.EncoderOutput` it then returns is registered as a
    pytree so that DDP sees the tensors inside it (see :func:`register_outputs`).
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    register_outputs()
    device = local_device(torch.device(device))
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   static_graph=True)


def register_outputs() -> None:
    """Make :class:`~mhsa_cli.model.EncoderOutput` a pytree node (idempotent).

    DDP finds the tensors a forward returns with ``torch.utils._pytree``; an
    unregistered dataclass looks like an opaque leaf, and then the first step of
    ``static_graph`` (or ``find_unused_parameters``) never hooks the backward: the
    gradients of that step would silently not be averaged and the ranks drift
    apart (a test covers it).
    """
    import dataclasses

    import torch.utils._pytree as pytree

    from .model import EncoderOutput

    if EncoderOutput in pytree.SUPPORTED_NODES:
        return
    names = [f.name for f in dataclasses.fields(EncoderOutput)]
    pytree.register_pytree_node(
        EncoderOutput,
        lambda o: ([getattr(o, n) for n in names], None),
        lambda values, _: EncoderOutput(*values),
    )


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def decorrelate_rng(seed: int) -> None:
    """Give ranks > 0 their own torch random stream (dropout masks), keeping rank 0's.

    Every rank seeds identically to build the same initial model; without this,
    all ranks would draw the same dropout masks. Rank 0 (and one process) is untouched.
    """
    if is_distributed() and rank() > 0:
        torch.manual_seed(seed * 1_000_003 + rank())
