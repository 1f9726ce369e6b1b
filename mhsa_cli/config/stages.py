"""The stage configs of quantize, bench, predict, export, import and recipe (train and distill:
:mod:`.training`; prune: :mod:`.pruning`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..errors import MhsaError
from .fields import opt
from .common import MAX_BATCH, MAX_SEED, MAX_THREADS, MAX_WIDTH, _force, _out, _threads

INT8_METHODS = ("dynamic", "static")  # ORT int8 variants (mhsa_cli.export.int8.INT8_METHODS has one entry each)


@dataclass
class QuantizeConfig:
    """``mhsa quantize``: dynamic int8 quantization of every nn.Linear (CPU)."""

    checkpoint: str = opt("", "float checkpoint folder to quantize", argument=True)
    engine: str = opt("auto", "quantized engine: auto picks the fastest supported here",
                      choices=("auto", "x86", "fbgemm", "onednn", "qnnpack"))
    per_channel: bool = opt(False, "per-channel weight scales (else per-tensor)")
    classifier: bool = opt(True, "quantize the classifier head too")
    embeddings: bool = opt(True, "store large token embedding tables as int8 too (weight-only, one scale "
                                 "per row, as the ORT int8 export does)")
    backend: str = opt("torch-ao", "quantization backend", choices=("torch-ao",))
    latency_time: float = opt(0.25, "seconds per model and batch size (1, 32) of a quick float-vs-int8 "
                                    "CPU latency check (0 = skip; mhsa bench measures properly)", min=0.0)
    threads: int = _threads()
    out: str = _out("runs/int8")
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
    per_channel: bool = opt(False, "ORT int8 rows: one weight scale per output channel (export's --per-channel), "
                            "as the export you deploy was made")
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
