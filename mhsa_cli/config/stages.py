"""The stage configs (one dataclass per command: ``mhsa train``, ``prune``, ...), their fields
declared with :func:`~mhsa_cli.config.fields.opt`, and the upper bounds of numbers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import MhsaError
from .fields import opt

# Upper bounds: far above any real use, low enough that a typo (an extra zero run, 1e9) is an error
# at validation instead of an out-of-memory crash or a run of days.
MAX_SEED = 2**32 - 1  # what every generator we seed accepts
MAX_LAYERS = 1024
MAX_WIDTH = 65536  # d_model, heads, sequence length
MAX_FF = 1 << 20
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_LR = 10.0
MAX_THREADS = 4096


def task_names() -> list[str]:
    from ..tasks import TASKS

    return list(TASKS)


# ---------------------------------------------------------------- stage configs
# Shared option groups are plain functions returning fields so each stage's
# dataclass lists its own options (and their help) in one place.

def _device(default: str = "auto") -> Any:
    return opt(default, "device: auto (cuda if present), cpu or cuda", choices=("auto", "cpu", "cuda"))


def _threads() -> Any:
    return opt(0, "torch CPU threads (0 = torch's default)", min=0, max=MAX_THREADS)


def _out(default: str) -> Any:
    return opt(default, "output folder (a checkpoint folder)")


def _force() -> Any:
    return opt(False, "replace the output folder if it exists")


BUDGET_RUNTIMES = ("torch", "onnxruntime-int8")  # prune --target-latency (mhsa_cli.prune.latency.MEASURES)
INT8_METHODS = ("dynamic", "static")  # ORT int8 variants (mhsa_cli.export.int8.INT8_METHODS has one entry each)
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
    """Fill a prune / distill config's unset ``lr``, ``warmup`` and ``schedule``: from the
    checkpoint's ``train --init`` fine-tuning (``inherited``, see
    :func:`mhsa_cli.checkpoint.finetune_loop`), else the stage's defaults."""
    for name, default in (("lr", lr), ("warmup", 0.05), ("schedule", "cosine")):
        if getattr(cfg, name) is None:
            setattr(cfg, name, inherited.get(name, default))


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
    lr: Optional[float] = opt(None, "fine-tuning peak learning rate (default 1e-3; a model fine-tuned with "
                              "train --init: its own)", min=0.0, min_open=True, max=MAX_LR)
    warmup: Optional[float] = opt(None, "fine-tuning warm-up fraction (default 0.05; after train --init: its own)",
                                  min=0.0, max=1.0)
    schedule: Optional[str] = opt(None, "fine-tuning decay after warm-up (default cosine; after train --init: its "
                                  "own)", choices=("cosine", "linear"))
    weight_decay: float = opt(0.01, "fine-tuning weight decay", min=0.0)
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


@dataclass
class QuantizeConfig:
    """``mhsa quantize``: dynamic int8 quantization of every nn.Linear (CPU)."""

    checkpoint: str = opt("", "float checkpoint folder to quantize", argument=True)
    engine: str = opt("auto", "quantized engine: auto picks the fastest supported here",
                      choices=("auto", "x86", "fbgemm", "onednn", "qnnpack"))
    per_channel: bool = opt(False, "per-channel weight scales (else per-tensor)")
    classifier: bool = opt(True, "quantize the classifier head too")
    backend: str = opt("torch-ao", "quantization backend", choices=("torch-ao",))
    latency_time: float = opt(0.25, "seconds per model and batch size (1, 32) of a quick float-vs-int8 "
                                    "CPU latency check (0 = skip; mhsa bench measures properly)", min=0.0)
    threads: int = _threads()
    out: str = _out("runs/int8")
    force: bool = _force()


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


def _runtime_names() -> list[str]:
    from ..runtimes import runtime_names

    return runtime_names()


@dataclass
class BenchConfig:
    """``mhsa bench``: accuracy, size and latency of checkpoints side by side."""

    checkpoints: list[str] = opt([], "checkpoint folders to compare", argument=True)
    baseline: Optional[str] = opt(None, "checkpoint the ratios are relative to (default: the first)")
    devices: list[str] = opt(["cpu"], "devices to time on: cpu, cuda", choices=("cpu", "cuda"))
    batch_sizes: list[int] = opt([1, 32], "batch sizes to time", min=1, max=MAX_BATCH)
    threads: int = opt(0, "torch CPU threads while timing (0 = all cores)", min=0, max=MAX_THREADS)
    min_time: float = opt(1.0, "minimum seconds of timing per model, device and batch size", min=0.0, max=3600.0)
    min_repeats: int = opt(20, "minimum timed repeats per model, device and batch size", min=1)
    warmup: int = opt(5, "untimed warm-up rounds (0 = none; else they last at least 10 % of --min-time)", min=0)
    burst_ms: float = opt(10.0, "per round each model runs about this long back to back, after one untimed "
                                "call (warm caches, as a server of one model sees them); 0 = one call per model "
                                "per round (every call after the other models': caches evicted)", min=0.0, max=1000.0)
    runtime: list[str] = opt(["torch"], "runtimes to measure each checkpoint in: torch, onnxruntime (float "
                             "checkpoints get ORT fp32 and ORT int8 rows, exported to a temporary folder)",
                             choices=_runtime_names)
    ort_threads: list[int] = opt([], "ORT intra-op thread counts, one row per count for each ORT model "
                                 "(default: torch's count). E.g. 1,2 on 2 cores: ORT's second thread can "
                                 "cost more than it gives on a small model; the table says which is faster",
                                 min=1, max=MAX_THREADS)
    int8_methods: list[str] = opt(["dynamic"], "ORT int8 rows of each float checkpoint: dynamic (ORT int8), "
                                  "static (ORT int8-static: QDQ, calibrated on 256 validation rows)",
                                  choices=INT8_METHODS)
    seq_len: Optional[int] = opt(None, "timing input length (default: the model's max_len)", min=1, max=MAX_WIDTH)
    seed: int = opt(0, "seed for the timing inputs", min=0, max=MAX_SEED)
    out: Optional[str] = opt(None, "folder for bench.json, .csv, .md, .png")
    force: bool = _force()


def _exporter_names() -> list[str]:
    from ..export.onnx import EXPORTERS

    return list(EXPORTERS)


def _predict_loader_names() -> list[str]:
    from ..predict.loaders import runtime_names

    return runtime_names()


@dataclass
class PredictConfig:
    """``mhsa predict``: labels and probabilities for new text."""

    checkpoint: str = opt("", "model folder: a text checkpoint (float or int8) or an `mhsa export` folder", argument=True)
    text: list[str] = opt([], "a text to classify", repeat=True)
    data: Optional[str] = opt(None, "file of texts: .csv, .tsv or .jsonl (streamed in chunks), or a Hugging Face "
                              "data set hf:NAME[:CONFIG] (local cache only) or hf:FOLDER (save_to_disk)")
    split: Optional[str] = opt(None, "hf: data: the split to predict (default: the only split, else test)")
    format: Optional[str] = opt(None, "file format (default: from the extension)", choices=("csv", "tsv", "jsonl"))
    text_column: Optional[str] = opt(None, "column / field with the text (default: the checkpoint's)")
    label_column: Optional[str] = opt(None, "column / field with true labels: when present, used to report "
                                      "accuracy, never as input (default: the checkpoint's)")
    ignore_labels: bool = opt(False, "do not measure accuracy even if the file has a label column")
    out: Optional[str] = opt(None, "write every prediction to this .csv or .jsonl file (atomic)")
    show: int = opt(20, "rows shown in the table for --data", min=0)
    batch_size: int = opt(256, "rows per forward call", min=1)
    runtime: str = opt("auto", "runtime (mhsa_cli.runtimes): auto picks by folder content (a checkpoint: torch; "
                               "an export folder: onnxruntime)", choices=_predict_loader_names)
    precision: Optional[str] = opt(None, "export folders: fp32 or int8 ONNX model (default: the first the folder "
                                   "offers)", choices=("fp32", "int8"))
    threads: int = _threads()
    force: bool = opt(False, "replace the --out file if it exists")


@dataclass
class ExportConfig:
    """``mhsa export``: a float checkpoint -> ONNX (fp32 + ORT dynamic int8), checked against torch."""

    checkpoint: str = opt("", "float checkpoint folder to export", argument=True)
    int8: bool = opt(True, "also write model.int8.onnx: ONNX Runtime dynamic int8 (after ORT's pre-processing)")
    reduce_range: bool = opt(False, "int8: 7-bit weights (ORT's advice for CPUs without VNNI, where u8 x s8 "
                                    "products can saturate; costs accuracy elsewhere)")
    per_channel: bool = opt(False, "int8: per-channel weight scales (else per-tensor)")
    fuse_qkv: bool = opt(True, "fuse each layer's q, k, v projections into one product in the graph (same "
                               "logits; ORT int8 about 7 % faster at batch 1)")
    fuse_attention: bool = opt(True, "each layer's attention as one ONNX Runtime MultiHeadAttention node "
                                     "(com.microsoft domain, needs onnxruntime >= 1.21; same logits; the quickstart "
                                     "student's ORT int8 5-9 % faster at batch 1); "
                                     "--no-fuse-attention: standard ONNX ops only, for other runtimes")
    exporter: str = opt("dynamo", "torch's ONNX exporter: dynamo (torch.export + onnxscript) or torchscript "
                                  "(deprecated by torch, kept as a fallback: ~0.2 s vs ~4.5 s to export, the same "
                                  "fused graph, one shape node fewer for ORT)", choices=_exporter_names)
    opset: int = opt(18, "ONNX opset (dynamo: 18-23; torchscript: 14-20, its highest)", min=14, max=23)
    check_rows: int = opt(256, "rows compared torch vs ORT fp32 (validation rows; without data, seeded rows "
                               "built from the checkpoint)", min=1)
    tolerance: float = opt(1e-4, "absolute logit tolerance torch vs ORT fp32 (atol: each logit may differ by "
                                 "tolerance + rtol x |torch logit|)", min=0.0, min_open=True)
    rtol: float = opt(1e-5, "relative logit tolerance torch vs ORT fp32 (times each torch logit's size; "
                            "torch.testing.assert_close's rule)", min=0.0)
    int8_methods: list[str] = opt(["dynamic", "static"], "int8 variants to make and measure on validation: "
                                  "dynamic (activations quantized per call) and static (QDQ, calibrated on "
                                  "validation rows; needs data); the fastest within --max-drop is kept as "
                                  "model.int8.onnx (without data: dynamic only, kept without the gate)",
                                  choices=INT8_METHODS)
    max_drop: float = opt(0.5, "int8 quality gate: the most validation accuracy points an int8 variant may "
                               "lose against ORT fp32 (none within: no int8 file, export.json says why)", min=0.0)
    threads: int = _threads()
    out: str = opt("runs/export", "output folder (an export folder: ONNX files + export.json)")
    force: bool = _force()

    def validate(self) -> None:
        from ..export.onnx import OPSETS

        low, high = OPSETS[self.exporter]
        if not low <= self.opset <= high:
            raise MhsaError(f"--opset {self.opset} is outside the {self.exporter} exporter's {low}-{high}")


@dataclass
class ImportConfig:
    """``mhsa import``: a local Hugging Face BERT / RoBERTa / DistilBERT folder -> an mhsa checkpoint."""

    path: str = opt("", "Hugging Face model folder: config.json, model.safetensors (or shards), tokenizer.json",
                    argument=True)
    labels: Optional[list[str]] = opt(None, "class names: as many as the model's classifier renames its classes "
                                      "(in id order; with --data, names matching the file's labels keep the "
                                      "classifier); another number, or a base model, gets a fresh classifier")
    num_labels: Optional[int] = opt(None, "number of classes (names 0..N-1) when --labels is not given", min=2)
    data: Optional[str] = opt(None, "CSV/TSV/JSONL file or hf:NAME[:CONFIG] / hf:FOLDER data set to attach as "
                              "the model's task (validation split for "
                              "pruning, test split for bench), tokenized with the model's tokenizer")
    task_options: dict[str, Any] = opt({}, "options of that file, e.g. text_column=review, max_len=128",
                                       flag="--task-opt")
    seed: int = opt(0, "seed of a fresh classifier and of the data split", min=0, max=MAX_SEED)
    out: str = _out("runs/imported")
    force: bool = _force()

    def validate(self) -> None:
        if self.labels is not None and len(self.labels) < 2:
            raise MhsaError("--labels needs at least 2 class names")
        if self.labels is not None:
            from ..labels import check_labels

            check_labels(list(self.labels), "--labels")
        if self.labels is not None and self.num_labels is not None and len(self.labels) != self.num_labels:
            raise MhsaError(f"--labels names {len(self.labels)} classes but --num-labels is {self.num_labels}")


@dataclass
class RecipeConfig:
    """``mhsa run``: run a YAML pipeline of stages."""

    recipe: str = opt("", "recipe YAML file", argument=True)
    out: Optional[str] = opt(None, "results folder (default: runs/recipes/<recipe name>)")
    set: dict[str, Any] = opt({}, "override a recipe value: key.path=value")
    dry_run: bool = opt(False, "validate and print the plan; run nothing")
    force: bool = opt(False, "use an output folder made by a different recipe")
    rerun_from: Optional[str] = opt(None, "rerun this stage and every stage that depends on it, even if "
                                          "up to date (others are still skipped when done)")
