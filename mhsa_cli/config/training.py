"""``mhsa train`` and ``mhsa distill`` configs, the training defaults (from scratch and for
fine-tuning with ``--init``) and how prune / distill inherit a fine-tuning loop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import MhsaError
from .fields import opt
from .common import MAX_BATCH, MAX_EPOCHS, MAX_FF, MAX_LAYERS, MAX_LR, MAX_SEED, MAX_WIDTH, _device, _force, _out, _threads, task_names

INIT_FIXED = ("task", "layers", "d_model", "heads", "d_ff", "dropout", "pooling")  # taken from --init's checkpoint
# ``mhsa train`` settings a task may override (TaskInfo.train_defaults); these are the
# defaults of tasks that do not (order, digits: the int8 quickstart model, see README).
TRAIN_DEFAULTS: dict[str, Any] = dict(layers=2, d_model=256, heads=8, d_ff=512, dropout=0.0, pooling="cls",
                                      epochs=12, batch_size=64, lr=1e-3, weight_decay=0.01, patience=0,
                                      token_dropout=0.0, warmup=0.05, schedule="cosine")
# ``mhsa train --init``: fine-tuning a pretrained encoder (BERT's recipe: small peak lr, 10 % warm-up,
# linear decay, weight decay; chosen on trec / sms *validation*, README "Bring a pretrained encoder")
FINETUNE_DEFAULTS: dict[str, Any] = dict(epochs=3, batch_size=32, lr=5e-5, weight_decay=0.01, patience=0,
                                         warmup=0.1, schedule="linear")


@dataclass
class TrainConfig:
    """``mhsa train``: train a baseline classifier on a task."""

    task: str = opt("order", "task name (see `mhsa tasks`)", choices=task_names)
    task_options: dict[str, Any] = opt({}, "task option key=value, e.g. n_train=2000", flag="--task-opt")
    data: Optional[str] = opt(None, "text task: CSV/TSV/JSONL file, or a Hugging Face data set hf:NAME[:CONFIG] "
                              "(local cache only, never downloaded) or hf:FOLDER (save_to_disk); splits and "
                              "columns: --task-opt split=, test_split=, text_column=, label_column= (same as "
                              "--task text --task-opt path=...)")
    init: Optional[str] = opt(None, "fine-tune this float checkpoint (e.g. from `mhsa import`) instead of a fresh "
                              "model: its architecture and weights (the shape options are ignored); with --data "
                              "its stored tokenizer reads the file; other labels get a fresh classifier")
    seed: int = opt(0, "random seed (data split, initialisation, batch order)", min=0, max=MAX_SEED)
    layers: Optional[int] = opt(None, "number of encoder blocks (default: the task's: order/digits 2, text 1)",
                                min=1, max=MAX_LAYERS)
    d_model: Optional[int] = opt(None, "model width (default: the task's: order/digits 256, text 64)",
                                 min=1, max=MAX_WIDTH)
    heads: Optional[int] = opt(None, "attention heads per layer, must divide d_model (default: the task's: "
                               "order/digits 8, text 4)", min=1, max=MAX_WIDTH)
    d_ff: Optional[int] = opt(None, "feed-forward hidden size (default: the task's: order/digits 512, text 128)",
                              min=1, max=MAX_FF)
    dropout: Optional[float] = opt(None, "dropout probability (default: the task's: order/digits 0, text 0.3)",
                                   min=0.0, max=1.0, max_open=True)
    pooling: Optional[str] = opt(None, "pooling: cls token, mean or max over tokens, or meanmax (their sum) "
                                 "(default: the task's: order/digits cls, text meanmax)",
                                 choices=("cls", "mean", "max", "meanmax"))
    epochs: Optional[int] = opt(None, "training epochs (default: the task's: order 8, digits 40, text 30 with "
                                "early stopping; with --init 3)", min=1, max=MAX_EPOCHS)
    batch_size: Optional[int] = opt(None, "global batch size (under torchrun split evenly over the processes: "
                                    "must be divisible by their number) (default: the task's: order/digits 64, "
                                    "text 32; with --init 32)", min=1, max=MAX_BATCH)
    lr: Optional[float] = opt(None, "peak learning rate, AdamW (default: the task's: order/digits 1e-3, text 3e-3; "
                              "with --init 5e-5)",
                              min=0.0, min_open=True, max=MAX_LR)
    warmup: Optional[float] = opt(None, "fraction of steps for linear warm-up (default 0.05; with --init 0.1)",
                                  min=0.0, max=1.0)
    schedule: Optional[str] = opt(None, "learning-rate decay after warm-up (default cosine; with --init linear)",
                                  choices=("cosine", "linear"))
    weight_decay: Optional[float] = opt(None, "AdamW weight decay (default: the task's: 0.01)",
                                        min=0.0)
    grad_clip: float = opt(1.0, "gradient norm clip (0 = off)", min=0.0)
    label_smoothing: float = opt(0.0, "label smoothing", min=0.0, max=1.0, max_open=True)
    mixup: float = opt(0.0, "mixup strength a: train on mixes lam*x1+(1-lam)*x2 of input pairs and their "
                            "labels, lam ~ Beta(a, a), e.g. 1.0 (0 = off; feature tasks such as digits; "
                            "train acc is then on mixed inputs)", min=0.0)
    token_dropout: Optional[float] = opt(None, "word dropout (text task): each training token becomes <unk> "
                                         "with this probability, so it learns to read around words it has not seen "
                                         "(default: the task's: order/digits 0, text 0.1)",
                                         min=0.0, max=1.0, max_open=True)
    patience: Optional[int] = opt(None, "early stopping: stop after this many epochs without a validation "
                                  "gain; the best validation epoch is kept either way (0 = off; default: the "
                                  "task's: order/digits 0, text 5)", min=0)
    bucket: bool = opt(True, "length-aware batching for text: training batches of rows of similar length "
                             "(sorted within windows of 32 batches, seeded); every batch is cut to its "
                             "longest row either way")
    amp: bool = opt(False, "mixed precision (bf16 autocast) on CUDA")
    device: str = _device()
    threads: int = _threads()
    out: str = _out("runs/baseline")
    force: bool = _force()

    def task_kwargs(self) -> dict[str, Any]:
        """Task options, with ``data`` folded into the text task's ``path``."""
        opts = dict(self.task_options)
        if self.data:
            opts["path"] = self.data
        return opts

    def validate(self) -> None:
        if self.init:  # the data and architecture come from the checkpoint (mhsa_cli.finetune)
            shape = [f.name for f in dataclasses.fields(self) if f.name in INIT_FIXED and getattr(self, f.name) != f.default]
            if shape:
                raise MhsaError(f"--{shape[0].replace('_', '-')} has no effect with --init: the architecture and "
                                "task come from the checkpoint (its data, or --data FILE)")
            if self.token_dropout:
                raise MhsaError("--token-dropout replaces words by the text task's <unk> (id 1); an --init "
                                "checkpoint's tokenizer may number it differently: drop --token-dropout")
            for name, default in {**TRAIN_DEFAULTS, **FINETUNE_DEFAULTS}.items():  # the shape is the checkpoint's
                if name not in INIT_FIXED and getattr(self, name) is None:
                    setattr(self, name, default)
            return
        if self.data and self.task != "text":
            self.task = "text" if self.task == "order" else self.task
            if self.task != "text":
                raise MhsaError(f"--data is for the text task, not '{self.task}'")
        from ..tasks import TASKS

        task_defaults = TASKS[self.task].train_defaults if self.task in TASKS else {}
        for name, default in TRAIN_DEFAULTS.items():  # resolved here so every output records the real value
            if getattr(self, name) is None:
                setattr(self, name, task_defaults.get(name, default))
        if self.token_dropout and self.task != "text":
            raise MhsaError(f"--token-dropout replaces words by <unk>, which only the text task has, "
                            f"not '{self.task}'")
        if self.d_model % self.heads:
            raise MhsaError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        from ..tasks import check_options

        try:
            check_options(self.task, self.task_kwargs())  # types and ranges, before any work
        except MhsaError as exc:
            raise MhsaError(str(exc), key="task_options") from None


def resolve_loop(cfg: Any, inherited: dict[str, Any], lr: float) -> None:
    """Fill a prune / distill config's unset ``lr``, ``warmup``, ``schedule`` (and prune's
    ``token_dropout``): from ``inherited`` (prune: :func:`mhsa_cli.checkpoint.training_loop`, distill:
    :func:`mhsa_cli.checkpoint.finetune_loop`), else the stage's defaults."""
    for name, default in (("lr", lr), ("warmup", 0.05), ("schedule", "cosine"), ("token_dropout", 0.0)):
        if hasattr(cfg, name) and getattr(cfg, name) is None:  # distill has no word dropout
            setattr(cfg, name, inherited.get(name, default))


@dataclass
class DistillConfig:
    """``mhsa distill``: train a smaller student from a teacher checkpoint."""

    teacher: str = opt("", "teacher checkpoint folder", required=True)
    shrink: Optional[str] = opt(None, "student preset: half (half layers and width) or quarter (half layers, "
                                "quarter width); default half when no shape option is given",
                                choices=("half", "quarter"))
    layers: Optional[int] = opt(None, "student layers (default: from --shrink, else teacher's)", min=1, max=MAX_LAYERS)
    d_model: Optional[int] = opt(None, "student width (default: from --shrink, else teacher's)", min=1, max=MAX_WIDTH)
    heads: Optional[int] = opt(None, "student heads per layer (default: keep the teacher's head_dim)", min=1, max=MAX_WIDTH)
    d_ff: Optional[int] = opt(None, "student feed-forward size (default: from --shrink, else teacher's)",
                              min=1, max=MAX_FF, flag=("--d-ff", "--ff"))
    alpha: float = opt(0.5, "weight of the KD term: (1-alpha)*CE + alpha*T^2*KL", min=0.0, max=1.0)
    temperature: float = opt(2.0, "softmax temperature T (> 0)", min=0.0, min_open=True, max=1000.0)
    hidden_weight: float = opt(0.0, "weight of hidden-state MSE (0 = off)", min=0.0)
    hidden_layers: Optional[list[str]] = opt(None, "student:teacher layer pairs for the hidden (and attention) "
                                             "losses, e.g. 1:2; 0 = embeddings (default: last block to last block)")
    attn_weight: float = opt(0.0, "weight of attention KL, head-averaged maps (0 = off)", min=0.0)
    init_from_teacher: bool = opt(False, "initialise student blocks from every k-th teacher block")
    compare_scratch: bool = opt(False, "also train the same student without the teacher")
    epochs: Optional[int] = opt(None, "training epochs (default: the teacher's training epochs)", min=1, max=MAX_EPOCHS)
    batch_size: int = opt(64, "global batch size (under torchrun split evenly over the "
                          "processes: must be divisible by their number)", min=1, max=MAX_BATCH)
    lr: Optional[float] = opt(None, "peak learning rate (default 3e-3; a teacher fine-tuned with train --init: "
                              "its own)", min=0.0, min_open=True, max=MAX_LR)
    warmup: Optional[float] = opt(None, "warm-up fraction (default 0.05; after train --init: the teacher's)",
                                  min=0.0, max=1.0)
    schedule: Optional[str] = opt(None, "decay after warm-up (default cosine; after train --init: the teacher's)",
                                  choices=("cosine", "linear"))
    weight_decay: float = opt(0.01, "weight decay", min=0.0)
    grad_clip: float = opt(1.0, "gradient norm clip (0 = off)", min=0.0)
    mixup: float = opt(0.0, "mixup strength a (0 = off; feature tasks only): the student and the teacher see "
                            "the same mixed inputs, lam ~ Beta(a, a); --compare-scratch gets the same mixes",
                       min=0.0)
    seed: int = opt(0, "seed", min=0, max=MAX_SEED)
    device: str = _device()
    threads: int = _threads()
    out: str = _out("runs/student")
    force: bool = _force()
