"""What ``mhsa prune`` scores heads, fine-tunes and measures accuracy on.

``--data FILE`` is read with the checkpoint's tokenizer (as ``train --init``
reads it: :func:`mhsa_cli.finetune.checkpoint_data`); without it the
checkpoint's own data, when it can be rebuilt (:func:`mhsa_cli.tasks.task_or_reason`).
Only scoring heads or neurons by gradient or taylor (:data:`.importance.NEEDS_DATA`),
blocks by loss (:data:`.layers.LAYER_NEEDS_DATA`), fine-tuning and a sweep need
data; magnitude and random (and ``--drop-layers-at``) prune a checkpoint without
any (an import without ``--data``, a data file gone).
"""

from __future__ import annotations

from ..checkpoint import Checkpoint
from ..config import PruneConfig
from ..errors import MhsaError
from ..tasks import TaskData, task_or_reason
from .importance import NEEDS_DATA
from .layers import LAYER_NEEDS_DATA


def _needs_data(cfg: PruneConfig) -> tuple[str, str] | None:
    """(what needs data, the alternative without it) for the first setting that needs data, or None."""
    scored = [m for m in cfg.method if m in NEEDS_DATA]
    if cfg.sweep is not None:
        return "--sweep measures test accuracy", ""
    if scored:
        return f"--method {scored[0]} scores heads on validation data", ", or use --method magnitude or random"
    if (cfg.drop_layers or cfg.budget) and not cfg.drop_layers_at and cfg.layer_method in LAYER_NEEDS_DATA:
        return (f"--layer-method {cfg.layer_method} scores blocks on validation data",
                ", or use --layer-method random or --drop-layers-at")
    if cfg.finetune_epochs:
        return "--finetune-epochs fine-tunes", ", or drop --finetune-epochs"
    return None


def _file_data(cfg: PruneConfig, ckpt: Checkpoint) -> TaskData:
    """``--data`` read with the checkpoint's tokenizer; its labels must be the model's (the classifier stays).

    Raises:
        MhsaError: see :func:`mhsa_cli.finetune.checkpoint_data`; labels the model does not have.
    """
    from ..finetune import checkpoint_data

    data = checkpoint_data(cfg, ckpt, ckpt.model_config)
    own = [str(c) for c in ckpt.task_spec.get("labels") or []]
    if (own and list(data.labels) != own) or data.num_classes != ckpt.model_config.num_classes:
        raise MhsaError(f"--data {cfg.data} has labels {', '.join(data.labels[:6])} where {ckpt.path} has "
                        f"{', '.join(own[:6]) or ckpt.model_config.num_classes}; pruning keeps the classifier: "
                        "fine-tune on these labels first (mhsa train --init CKPT --data FILE)")
    return data


def prune_data(cfg: PruneConfig, ckpt: Checkpoint) -> tuple[TaskData | None, str | None]:
    """The data to score, fine-tune and measure on (``--data``, else the checkpoint's own), or
    None and why there is none when nothing asked for needs it.

    Raises:
        MhsaError: a setting needs data and there is none (the message names ``--data``);
            a ``--data`` file the checkpoint cannot read or whose labels are not the model's.
    """
    if cfg.data:
        return _file_data(cfg, ckpt), None
    data, why = task_or_reason(ckpt.task_spec)
    need = _needs_data(cfg)
    if data is None and need:
        raise MhsaError(f"{need[0]}, but {ckpt.path} has {why}: pass --data FILE (read with the "
                        f"checkpoint's tokenizer){need[1]}")
    return data, why
