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

Two modules:

1. :mod:`.group` -- process group and failure handling: environment, :func:`setup`,
   :func:`teardown`, :func:`launched`, :func:`local`, :func:`on_rank0`,
   :func:`agree`, :class:`UniformError`, timeouts.
2. :mod:`.data` -- data parallelism: :func:`local_batch_size`, :func:`sampler`,
   :func:`train_order`, :func:`shard`, :func:`all_reduce_sum`,
   :func:`average_gradients`, :func:`wrap` (DDP), :func:`register_outputs`,
   :func:`decorrelate_rng`.

Everything public is importable from here (``from mhsa_cli.distributed import X``).
"""

from __future__ import annotations

from .data import (all_reduce_sum, average_gradients, decorrelate_rng, local_batch_size, local_device,
                   register_outputs, sampler, shard, train_order, wrap)
from .group import (DEFAULT_TIMEOUT_S, SCALABLE, TIMEOUT_ENV, UniformError, agree, device_type, env_rank,
                    env_world_size, is_distributed, is_main, launched, local, on_rank0, rank, setup, teardown,
                    timeout_s, world_size)

__all__ = [
    "DEFAULT_TIMEOUT_S", "SCALABLE", "TIMEOUT_ENV", "UniformError", "agree", "all_reduce_sum", "average_gradients",
    "decorrelate_rng", "device_type", "env_rank", "env_world_size", "is_distributed", "is_main",
    "launched", "local", "local_batch_size", "local_device", "on_rank0", "rank", "register_outputs", "sampler",
    "setup", "shard", "teardown", "timeout_s", "train_order", "wrap", "world_size",
]
