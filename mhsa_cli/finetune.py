"""``mhsa train --init CKPT``: fine-tune any float checkpoint (e.g. an imported encoder).

:func:`prepare_init` builds what :func:`mhsa_cli.train.train` needs from the
checkpoint instead of from ``--layers/--d-model/...``: its architecture and
weights, and the data:

* with ``--data FILE`` and a checkpoint that stores a tokenizer (``task ->
  tokenizer``, e.g. from ``mhsa import``): the file is tokenized with it
  (task ``hf-text``);
* without ``--data``: the checkpoint's own task again.

``mhsa prune --data FILE`` reads its file the same way (:func:`checkpoint_data`).

If the data's labels are not among the checkpoint's, the classifier ``head``
is replaced by a fresh one (seeded by ``--seed``) with one output per label;
everything else keeps the checkpoint's weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from .checkpoint import Checkpoint, load_checkpoint, load_state
from .errors import MhsaError
from .model import ModelConfig, build_model
from .tasks import TaskData, task_from_spec


def checkpoint_data(cfg: Any, ckpt: Checkpoint, mcfg: ModelConfig) -> TaskData:
    """The data of ``train --init`` and ``prune --data`` (see the module docstring): ``cfg.task_kwargs()``
    (``--data`` and ``--task-opt``) read with the checkpoint's tokenizer, split by ``cfg.seed``; without
    them the checkpoint's own task.

    Raises:
        MhsaError: a checkpoint without tokenizer given a file; inputs longer than its positions;
            what the ``hf-text`` task refuses.
    """
    from .tasks import hf_text

    spec, opts = ckpt.task_spec, cfg.task_kwargs()
    if not opts:
        return task_from_spec(spec)
    if not spec.get("tokenizer"):
        raise MhsaError(f"{ckpt.path} stores no tokenizer, so it cannot read a new data file (--data); "
                        "drop --data to use its own task (or import a model with tokenizer.json)")
    fixed = sorted(set(opts) - set(hf_text.FILE_OPTIONS))
    if fixed:  # tokenizer, min_freq, ...: the checkpoint's stored tokenizer reads the file, as stored
        via = f"--init {ckpt.path}" if getattr(cfg, "init", None) else str(ckpt.path)
        raise MhsaError(f"--task-opt {fixed[0]} does not apply with {via}: its stored tokenizer "
                        f"reads the file; options here: {', '.join(hf_text.FILE_OPTIONS)}")
    data = hf_text.build(cfg.seed, spec["tokenizer"], mcfg.pad_id, list(spec.get("labels") or []),
                         max_positions=mcfg.max_len, **opts)  # max_len: auto from the data unless given
    if data.max_len > mcfg.max_len:
        raise MhsaError(f"max_len {data.max_len} exceeds the {mcfg.max_len} positions of {ckpt.path}")
    return data


def prepare_init(cfg: Any) -> tuple[TaskData, ModelConfig, nn.Module, Checkpoint]:
    """Data, architecture, model (checkpoint weights; a fresh head if labels differ) and the checkpoint.

    Raises:
        MhsaError: an unreadable or int8 checkpoint, data it cannot encode, too long inputs.
    """
    ckpt = load_checkpoint(cfg.init)
    ckpt.require_kind("float", "fine-tune", "fine-tune its float parent, then quantize again")
    mcfg = ckpt.model_config
    data = checkpoint_data(cfg, ckpt, mcfg)
    if data.input_kind != mcfg.input_kind:
        raise MhsaError(f"{ckpt.path} takes {mcfg.input_kind}, the data gives {data.input_kind}")
    same = list(data.labels) == list(ckpt.task_spec.get("labels") or data.labels) \
        and data.num_classes == mcfg.num_classes
    if not same:
        mcfg = dataclasses.replace(mcfg, num_classes=data.num_classes).validate()
    model = build_model(mcfg, seed=cfg.seed)
    tensors = dict(ckpt.tensors)
    if not same:  # a fresh classifier: keep the seeded init of head.*
        tensors.update({k: v for k, v in model.state_dict().items() if k.startswith("head.")})
    load_state(model, tensors, ckpt.path)
    return data, mcfg, model, ckpt
