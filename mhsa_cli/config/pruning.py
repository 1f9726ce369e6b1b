"""``mhsa prune`` config: heads, neurons and blocks, ratios or a budget, KD fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..errors import MhsaError
from .fields import opt
from .common import MAX_BATCH, MAX_EPOCHS, MAX_LAYERS, MAX_LR, MAX_SEED, MAX_THREADS, MAX_WIDTH, _device, _force, _out, _threads

BUDGET_RUNTIMES = ("torch", "onnxruntime-int8")  # prune --target-latency (mhsa_cli.prune.latency.MEASURES)


def _importance_names() -> list[str]:
    from ..registry import IMPORTANCE  # filled by prune.importance: config never imports prune

    return list(IMPORTANCE)


def _layer_importance_names() -> list[str]:
    from ..registry import LAYER_IMPORTANCE  # filled by prune.layers

    return list(LAYER_IMPORTANCE)


@dataclass
class PruneConfig:
    """``mhsa prune``: score heads, feed-forward neurons and blocks on the validation split and
    remove the least important."""

    checkpoint: str = opt("", "float checkpoint folder to prune", argument=True)
    method: list[str] = opt(["gradient"], "importance: gradient or taylor (scored on validation data), magnitude "
                            "or random (no data needed) (several only with --sweep)", choices=_importance_names)
    data: Optional[str] = opt(None, "CSV/TSV/JSONL file or hf:NAME[:CONFIG] / hf:FOLDER to score heads (gradient, "
                              "taylor), fine-tune and measure accuracy on, read with the checkpoint's tokenizer "
                              "(default: the checkpoint's own data; a checkpoint without data prunes by magnitude "
                              "or random)")
    task_options: dict[str, Any] = opt({}, "options of that file, e.g. text_column=review, max_len=128",
                                       flag="--task-opt")
    ratio: Optional[float] = opt(None, "fraction of all heads to remove (default 0.5; not with --target-flops or "
                                 "--target-latency)", min=0.0, max=1.0, max_open=True)
    heads: Optional[int] = opt(None, "number of heads to remove (overrides --ratio)", min=0)
    scope: str = opt("global", "rank heads across layers (global) or per layer (layer)",
                     choices=("global", "layer"))
    min_heads_per_layer: int = opt(0, "keep at least this many heads in every layer", min=0)
    ffn_ratio: float = opt(0.0, "fraction of feed-forward neurons to remove (scored with --method; "
                           "0 = none)", min=0.0, max=1.0, max_open=True)
    ffn_scope: str = opt("layer", "neurons: the same fraction from every layer (layer) or ranked across "
                         "layers (global: a layer may lose them all)", choices=("layer", "global"))
    drop_layers: int = opt(0, "remove this many whole blocks, least important first (--layer-method)",
                           min=0, max=MAX_LAYERS)
    drop_layers_at: Optional[list[int]] = opt(None, "remove these blocks instead (0-based, e.g. 2,4)",
                                              min=0, max=MAX_LAYERS)
    layer_method: str = opt("loss", "block importance: loss (validation loss increase when the block is "
                            "skipped; needs data) or random (no data needed)", choices=_layer_importance_names)
    normalize: bool = opt(False, "gradient/taylor: L2-normalise scores per layer (Michel et al. did for "
                          "BERT; off by default: on our models it made global ranking empty vital layers)")
    importance_batches: int = opt(0, "validation batches used for importance (0 = all)", min=0)
    finetune_epochs: int = opt(0, "fine-tune epochs after pruning (same training loop)", min=0, max=MAX_EPOCHS)
    iterative: int = opt(1, "prune in this many steps, re-scoring heads (and fine-tuning, with "
                         "--finetune-epochs) after each", min=1, max=1000)
    kd_weight: float = opt(0.0, "fine-tuning with the unpruned input model as teacher: alpha of (1-alpha)*CE + "
                           "alpha*T^2*KL on logits (0 = plain cross-entropy; needs --finetune-epochs)",
                           min=0.0, max=1.0)
    kd_temperature: float = opt(2.0, "KD softmax temperature T (> 0)", min=0.0, min_open=True, max=1000.0)
    kd_hidden_weight: float = opt(0.0, "fine-tuning: weight of the hidden-state MSE between each kept block and "
                                  "the same block of the unpruned model (0 = off; needs --finetune-epochs)",
                                  min=0.0)
    kd_teacher: Optional[str] = opt(None, "KD teacher checkpoint instead of the unpruned input model: same task "
                                    "and width, e.g. the deeper model a distilled student came from (in a "
                                    "recipe: an earlier stage's name)")
    kd_hidden_layers: Optional[list[str]] = opt(None, "model:teacher block pairs of the hidden loss, 1-based in "
                                                "the input model's numbering (0 = embeddings), e.g. 1:2 (default: "
                                                "each block with itself; with a deeper --kd-teacher block i with "
                                                "i*L_t//L, TinyBERT's uniform map)")
    target_flops: Optional[float] = opt(None, "budget instead of ratios: remove heads, neurons and blocks, lowest "
                                        "importance per FLOP first, until the model has at most this fraction of "
                                        "the input's FLOPs (0 < F < 1)", min=0.0, max=1.0, min_open=True,
                                        max_open=True)
    target_latency: Optional[float] = opt(None, "budget instead of ratios: at most this fraction of the input's "
                                          "latency in --budget-runtime (FLOPs target chosen by bisection; 0 < L < 1)",
                                          min=0.0, max=1.0, min_open=True, max_open=True)
    budget_seq_len: Optional[int] = opt(None, "sequence length FLOPs and latency are counted at (default: the "
                                        "data's max_len when shorter than the model's, else the model's)", min=1, max=MAX_WIDTH)
    budget_runtime: str = opt("torch", "--target-latency: the runtime latency is measured in",
                              choices=BUDGET_RUNTIMES)
    budget_threads: int = opt(1, "--target-latency: intra-op threads of the measurement", min=1, max=MAX_THREADS)
    budget_batch: int = opt(1, "--target-latency: batch size of the measurement", min=1, max=MAX_BATCH)
    budget_rounds: int = opt(5, "--target-latency: bisection rounds (one candidate measured per round)",
                             min=1, max=50)
    budget_time: float = opt(0.2, "--target-latency: seconds of timed calls per model and round", min=0.0,
                             min_open=True, max=600.0)
    sweep: Optional[list[float]] = opt(None, "sensitivity sweep: ratios, e.g. 0,0.25,0.5,0.75,0.9 "
                                       "(test accuracy without fine-tuning)", min=0.0, max=1.0, max_open=True)
    random_seeds: int = opt(3, "sweep: seeds for the random method (mean and spread)", min=1, max=1000)
    batch_size: int = opt(64, "batch size of importance scoring and fine-tuning", min=1, max=MAX_BATCH)
    lr: Optional[float] = opt(None, "fine-tuning peak learning rate (default: the checkpoint's training's, e.g. "
                              "3e-3 for a text model, 5e-5 after train --init; 1e-3 after distill or without a "
                              "training step)", min=0.0, min_open=True, max=MAX_LR)
    warmup: Optional[float] = opt(None, "fine-tuning warm-up fraction (default: the checkpoint's training's, else "
                                  "0.05)", min=0.0, max=1.0)
    schedule: Optional[str] = opt(None, "fine-tuning decay after warm-up (default: the checkpoint's training's, "
                                  "else cosine)", choices=("cosine", "linear"))
    weight_decay: float = opt(0.01, "fine-tuning weight decay", min=0.0)
    token_dropout: Optional[float] = opt(None, "fine-tuning word dropout (mhsa's text task): each token becomes "
                                         "<unk> with this probability (default: the checkpoint's training's, "
                                         "e.g. 0.1 for a text model, else 0)", min=0.0, max=1.0, max_open=True)
    seed: int = opt(0, "seed (random importance, fine-tuning order)", min=0, max=MAX_SEED)
    device: str = _device()
    threads: int = _threads()
    out: str = _out("runs/pruned")
    force: bool = _force()

    def task_kwargs(self) -> dict[str, Any]:
        """``--data`` and ``--task-opt`` as the text file options (``path`` = ``--data``)."""
        return {**self.task_options, "path": self.data} if self.data else dict(self.task_options)

    @property
    def budget(self) -> str | None:
        """``target_flops`` or ``target_latency`` when one is set (budget mode), else None."""
        return next((k for k in ("target_flops", "target_latency") if getattr(self, k) is not None), None)

    def validate(self) -> None:
        if self.task_options and not self.data:
            raise MhsaError("--task-opt needs --data (the options are the data file's)", key="task_options")
        self._validate_budget()
        if self.ratio is None and self.budget is None:
            self.ratio = 0.5
        if (self.kd_weight or self.kd_hidden_weight) and not self.finetune_epochs:
            raise MhsaError("--kd-weight and --kd-hidden-weight act on fine-tuning: add --finetune-epochs N",
                            key="kd_weight")
        if self.kd_teacher and not (self.kd_weight or self.kd_hidden_weight):
            raise MhsaError("--kd-teacher teaches through --kd-weight or --kd-hidden-weight: set one > 0",
                            key="kd_teacher")
        if self.kd_hidden_layers and not self.kd_hidden_weight:
            raise MhsaError("--kd-hidden-layers pairs blocks for the hidden loss: set --kd-hidden-weight > 0",
                            key="kd_hidden_layers")

    def _validate_budget(self) -> None:
        """A budget replaces the ratios: refuse it with them (or with the other budget)."""
        if self.budget is None:
            return
        if self.target_flops is not None and self.target_latency is not None:
            raise MhsaError("give --target-flops or --target-latency, not both", key="target_flops")
        given = [flag for flag, on in (("--ratio", self.ratio is not None), ("--heads", self.heads is not None),
                                       ("--ffn-ratio", bool(self.ffn_ratio)), ("--drop-layers", bool(self.drop_layers)),
                                       ("--drop-layers-at", self.drop_layers_at is not None),
                                       ("--sweep", self.sweep is not None)) if on]
        if given:
            raise MhsaError(f"--{self.budget.replace('_', '-')} chooses how much of each granularity goes; "
                            f"drop {', '.join(given)}", key=self.budget)
