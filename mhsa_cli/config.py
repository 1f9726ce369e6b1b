"""One schema for every stage: CLI options and YAML recipe keys are the same
dataclass fields, with the same names, defaults and help text.

A field is declared with :func:`opt`; :func:`build_config` turns a mapping
(from the CLI, a recipe stage, or ``key=value`` overrides) into a validated
dataclass, and :mod:`mhsa_cli.cli` turns the same fields into Typer options.
Unknown keys are an error that names the closest valid key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import yaml

from .errors import MhsaError, closest


def opt(default: Any, help: str, *, argument: bool = False, choices: Any = None,
        min: float | None = None, max: float | None = None, min_open: bool = False,
        max_open: bool = False, cli: bool = True, recipe: bool = True,
        flag: str | tuple[str, ...] | None = None) -> Any:
    """Declare a config field.

    Args:
        default: default value (lists and dicts are copied per instance).
        help: one-line help, shown by ``--help`` and in recipe errors.
        argument: a positional CLI argument instead of an ``--option``.
        choices: a collection, or a callable returning one (e.g. a registry's keys).
        min, max: numeric range; ``min_open``/``max_open`` make it exclusive.
        cli: expose as a CLI option; recipe: accept as a recipe key.
        flag: CLI flag(s) if not ``--field-name`` (the first is the main name).
    """
    meta = dict(help=help, argument=argument, choices=choices, min=min, max=max,
                min_open=min_open, max_open=max_open, cli=cli, recipe=recipe, flag=flag)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- type handling

def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional: return (inner type, is_optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to type ``tp`` (lists accept "a,b" strings; dicts accept "k=v" lists)."""
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise MhsaError(f"'{name}' must not be empty")
    origin = typing.get_origin(base)
    if origin is list:
        (item,) = typing.get_args(base) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(name, v, item) for v in value]
    if origin is dict or base is dict:
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, (list, tuple)):
            return parse_assignments(list(value), name)
        raise MhsaError(f"'{name}' must be a mapping (key: value), got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise MhsaError(f"'{name}' must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise MhsaError(f"'{name}' must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise MhsaError(f"'{name}' must be an integer, got {value!r}") from None
    if base is float:
        if isinstance(value, bool):
            raise MhsaError(f"'{name}' must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise MhsaError(f"'{name}' must be a number, got {value!r}") from None
    if base is str:
        if isinstance(value, (dict, list)):
            raise MhsaError(f"'{name}' must be a string, got {value!r}")
        return str(value)
    return value


def _check_range(name: str, value: Any, meta: dict[str, Any]) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (v < lo or (meta["min_open"] and v == lo)):
            raise MhsaError(f"'{name}' must be {'>' if meta['min_open'] else '>='} {lo}, got {v}")
        if hi is not None and (v > hi or (meta["max_open"] and v == hi)):
            raise MhsaError(f"'{name}' must be {'<' if meta['max_open'] else '<='} {hi}, got {v}")


def _check_choice(name: str, value: Any, meta: dict[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is None or value is None:
        return
    choices = list(choices() if callable(choices) else choices)
    for v in value if isinstance(value, list) else [value]:
        if v not in choices:
            raise MhsaError(f"'{name}': unknown value '{v}'{closest(str(v), map(str, choices))}; "
                            f"choose from: {', '.join(map(str, choices))}")


def parse_assignments(items: list[str], what: str = "--set") -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise MhsaError(f"{what}: expected key=value, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def build_config(cls: type, values: dict[str, Any]) -> Any:
    """Validate ``values`` against dataclass ``cls`` and return an instance.

    Raises:
        MhsaError: unknown key (closest valid key named), wrong type, out of range,
            unknown choice; ``.key`` names the offending key when there is one.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    for key in values:
        if key not in fields:
            raise MhsaError(f"unknown key '{key}'{closest(key, fields)}", key=key)
    kwargs = {}
    for name, value in values.items():
        try:
            v = _coerce(name, value, hints[name])
            _check_range(name, v, fields[name].metadata)
            _check_choice(name, v, fields[name].metadata)
        except MhsaError as exc:
            raise MhsaError(str(exc), key=name) from None
        kwargs[name] = v
    cfg = cls(**kwargs)
    for name, f in fields.items():  # defaults must satisfy the schema too
        if name not in values:
            _check_choice(name, getattr(cfg, name), f.metadata)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Resolved settings of a config, JSON-able."""
    return dataclasses.asdict(cfg)


def task_names() -> list[str]:
    from .tasks import TASKS

    return list(TASKS)


# ---------------------------------------------------------------- stage configs
# Shared option groups are plain functions returning fields so each stage's
# dataclass lists its own options (and their help) in one place.

def _device(default: str = "auto") -> Any:
    return opt(default, "device: auto (cuda if present), cpu or cuda", choices=("auto", "cpu", "cuda"))


def _threads() -> Any:
    return opt(0, "torch CPU threads (0 = torch's default)", min=0)


def _out(default: str) -> Any:
    return opt(default, "output folder (a checkpoint folder)")


def _force() -> Any:
    return opt(False, "replace the output folder if it exists")


@dataclass
class TrainConfig:
    """``mhsa train``: train a baseline classifier on a task."""

    task: str = opt("order", "task name (see `mhsa tasks`)", choices=task_names)
    task_options: dict[str, Any] = opt({}, "task option key=value, e.g. n_train=2000", flag="--task-opt")
    data: Optional[str] = opt(None, "text task: CSV/TSV/JSONL file (same as --task text --task-opt path=FILE)")
    seed: int = opt(0, "random seed (data split, initialisation, batch order)", min=0)
    layers: int = opt(2, "number of encoder blocks", min=1)
    d_model: int = opt(256, "model width", min=1)
    heads: int = opt(8, "attention heads per layer (d_model must be divisible by it)", min=1)
    d_ff: int = opt(512, "feed-forward hidden size", min=1)
    dropout: float = opt(0.0, "dropout probability", min=0.0, max=1.0, max_open=True)
    pooling: str = opt("cls", "pooling: cls token or mean over tokens", choices=("cls", "mean"))
    epochs: Optional[int] = opt(None, "training epochs (default: the task's: order 8, digits 40, text 12)", min=1)
    batch_size: int = opt(64, "global batch size (under torchrun split evenly over the "
                          "processes: must be divisible by their number)", min=1)
    lr: float = opt(1e-3, "peak learning rate (AdamW)", min=0.0, min_open=True)
    warmup: float = opt(0.05, "fraction of steps for linear warm-up", min=0.0, max=1.0)
    weight_decay: float = opt(0.01, "AdamW weight decay", min=0.0)
    grad_clip: float = opt(1.0, "gradient norm clip (0 = off)", min=0.0)
    label_smoothing: float = opt(0.0, "label smoothing", min=0.0, max=1.0, max_open=True)
    mixup: float = opt(0.0, "mixup strength a: train on mixes lam*x1+(1-lam)*x2 of input pairs and their "
                            "labels, lam ~ Beta(a, a), e.g. 1.0 (0 = off; feature tasks such as digits; "
                            "train acc is then on mixed inputs)", min=0.0)
    patience: int = opt(0, "early stopping: epochs without validation gain (0 = off)", min=0)
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
        if self.data and self.task != "text":
            self.task = "text" if self.task == "order" else self.task
            if self.task != "text":
                raise MhsaError(f"--data is for the text task, not '{self.task}'")
        if self.epochs is None:  # resolved here so every output records the real number
            from .tasks import TASKS

            self.epochs = int(TASKS[self.task].train_defaults.get("epochs", 12)) if self.task in TASKS else 12
        if self.d_model % self.heads:
            raise MhsaError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML, turning syntax errors into one line with line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MhsaError(f"{source}:{where}: malformed YAML: {problem}") from None


ConfigFactory = Callable[[dict[str, Any]], Any]


def _importance_names() -> list[str]:
    from .prune import IMPORTANCE

    return list(IMPORTANCE)


@dataclass
class PruneConfig:
    """``mhsa prune``: score heads on the validation split and remove the least important."""

    checkpoint: str = opt("", "float checkpoint folder to prune", argument=True)
    method: list[str] = opt(["gradient"], "importance: gradient, taylor, magnitude or random "
                            "(several only with --sweep)", choices=_importance_names)
    ratio: float = opt(0.5, "fraction of all heads to remove", min=0.0, max=1.0, max_open=True)
    heads: Optional[int] = opt(None, "number of heads to remove (overrides --ratio)", min=0)
    scope: str = opt("global", "rank heads across layers (global) or per layer (layer)",
                     choices=("global", "layer"))
    min_heads_per_layer: int = opt(0, "keep at least this many heads in every layer", min=0)
    normalize: bool = opt(False, "gradient/taylor: L2-normalise scores per layer (Michel et al. did for "
                          "BERT; off by default: on our models it made global ranking empty vital layers)")
    importance_batches: int = opt(0, "validation batches used for importance (0 = all)", min=0)
    finetune_epochs: int = opt(0, "fine-tune epochs after pruning (same training loop)", min=0)
    iterative: int = opt(1, "prune in this many steps, re-scoring heads (and fine-tuning, with "
                         "--finetune-epochs) after each", min=1)
    sweep: Optional[list[float]] = opt(None, "sensitivity sweep: ratios, e.g. 0,0.25,0.5,0.75,0.9 "
                                       "(test accuracy without fine-tuning)", min=0.0, max=1.0, max_open=True)
    random_seeds: int = opt(3, "sweep: seeds for the random method (mean and spread)", min=1)
    batch_size: int = opt(64, "batch size of importance scoring and fine-tuning", min=1)
    lr: float = opt(1e-3, "fine-tuning peak learning rate", min=0.0, min_open=True)
    warmup: float = opt(0.05, "fine-tuning warm-up fraction", min=0.0, max=1.0)
    weight_decay: float = opt(0.01, "fine-tuning weight decay", min=0.0)
    seed: int = opt(0, "seed (random importance, fine-tuning order)", min=0)
    device: str = _device()
    threads: int = _threads()
    out: str = _out("runs/pruned")
    force: bool = _force()


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

    teacher: str = opt("", "teacher checkpoint folder")
    shrink: Optional[str] = opt(None, "student preset: half (half layers and width) or quarter (half layers, "
                                "quarter width); default half when no shape option is given",
                                choices=("half", "quarter"))
    layers: Optional[int] = opt(None, "student layers (default: from --shrink, else teacher's)", min=1)
    d_model: Optional[int] = opt(None, "student width (default: from --shrink, else teacher's)", min=1)
    heads: Optional[int] = opt(None, "student heads per layer (default: keep the teacher's head_dim)", min=1)
    d_ff: Optional[int] = opt(None, "student feed-forward size (default: from --shrink, else teacher's)",
                              min=1, flag=("--d-ff", "--ff"))
    alpha: float = opt(0.5, "weight of the KD term: (1-alpha)*CE + alpha*T^2*KL", min=0.0, max=1.0)
    temperature: float = opt(2.0, "softmax temperature T (> 0)", min=0.0, min_open=True)
    hidden_weight: float = opt(0.0, "weight of hidden-state MSE (0 = off)", min=0.0)
    hidden_layers: Optional[list[str]] = opt(None, "student:teacher layer pairs for the hidden (and attention) "
                                             "losses, e.g. 1:2; 0 = embeddings (default: last block to last block)")
    attn_weight: float = opt(0.0, "weight of attention KL, head-averaged maps (0 = off)", min=0.0)
    init_from_teacher: bool = opt(False, "initialise student blocks from every k-th teacher block")
    compare_scratch: bool = opt(False, "also train the same student without the teacher")
    epochs: Optional[int] = opt(None, "training epochs (default: the teacher's training epochs)", min=1)
    batch_size: int = opt(64, "global batch size (under torchrun split evenly over the "
                          "processes: must be divisible by their number)", min=1)
    lr: float = opt(3e-3, "peak learning rate", min=0.0, min_open=True)
    warmup: float = opt(0.05, "warm-up fraction", min=0.0, max=1.0)
    weight_decay: float = opt(0.01, "weight decay", min=0.0)
    grad_clip: float = opt(1.0, "gradient norm clip (0 = off)", min=0.0)
    mixup: float = opt(0.0, "mixup strength a (0 = off; feature tasks only): the student and the teacher see "
                            "the same mixed inputs, lam ~ Beta(a, a); --compare-scratch gets the same mixes",
                       min=0.0)
    seed: int = opt(0, "seed", min=0)
    device: str = _device()
    threads: int = _threads()
    out: str = _out("runs/student")
    force: bool = _force()


def _runtime_names() -> list[str]:
    from .runtimes import runtime_names

    return runtime_names()


@dataclass
class BenchConfig:
    """``mhsa bench``: accuracy, size and latency of checkpoints side by side."""

    checkpoints: list[str] = opt([], "checkpoint folders to compare", argument=True)
    baseline: Optional[str] = opt(None, "checkpoint the ratios are relative to (default: the first)")
    devices: list[str] = opt(["cpu"], "devices to time on: cpu, cuda", choices=("cpu", "cuda"))
    batch_sizes: list[int] = opt([1, 32], "batch sizes to time", min=1)
    threads: int = opt(0, "torch CPU threads while timing (0 = all cores)", min=0)
    min_time: float = opt(1.0, "minimum seconds of timing per model, device and batch size", min=0.0)
    min_repeats: int = opt(20, "minimum timed repeats per model, device and batch size", min=1)
    warmup: int = opt(5, "untimed warm-up rounds (0 = none; else they last at least 10 % of --min-time)", min=0)
    runtime: list[str] = opt(["torch"], "runtimes to measure each checkpoint in: torch, onnxruntime (float "
                             "checkpoints get ORT fp32 and ORT int8 rows, exported to a temporary folder)",
                             choices=_runtime_names)
    seq_len: Optional[int] = opt(None, "timing input length (default: the model's max_len)", min=1)
    seed: int = opt(0, "seed for the timing inputs", min=0)
    out: Optional[str] = opt(None, "folder for bench.json, .csv, .md, .png")
    force: bool = _force()


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
    opset: int = opt(17, "ONNX opset (>= 14 for scaled_dot_product_attention)", min=14, max=21)
    check_rows: int = opt(256, "validation rows compared torch vs ORT fp32", min=1)
    tolerance: float = opt(1e-4, "largest allowed absolute logit gap torch vs ORT fp32", min=0.0, min_open=True)
    threads: int = _threads()
    out: str = opt("runs/export", "output folder (an export folder: ONNX files + export.json)")
    force: bool = _force()


@dataclass
class RecipeConfig:
    """``mhsa run``: run a YAML pipeline of stages."""

    recipe: str = opt("", "recipe YAML file", argument=True)
    out: Optional[str] = opt(None, "results folder (default: results/<recipe name>)")
    set: dict[str, Any] = opt({}, "override a recipe value: key.path=value")
    dry_run: bool = opt(False, "validate and print the plan; run nothing")
    force: bool = opt(False, "use an output folder made by a different recipe")
