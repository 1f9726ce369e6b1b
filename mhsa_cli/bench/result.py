"""What ``mhsa bench`` measured: :class:`BenchResult` of :class:`BenchRow` rows (JSON both ways).

Measurement (:mod:`.command`) fills them; :mod:`mhsa_cli.report.bench` renders them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .timer import LatencyStats

Key = tuple[str, int]  # (device, batch size)
CPU_ONLY = "CPU-only"
# on CUDA every runtime's timed call starts and ends on the GPU (torch: the timer moves model and input
# there before timing; ORT: IOBinding, mhsa_cli.runtimes.onnxruntime.OrtCall.timed_call)
COPIES = ("host-device copies excluded for every runtime: the input is on the GPU before timing and the "
          "logits stay there (ORT through IOBinding)")
# lineage operation -> the kind shown in tables
KIND_BY_OPERATION = {"train": "float", "prune": "pruned", "quantize": "int8", "distill": "student", "import": "imported"}


@dataclass
class Ratios:
    """A model against the baseline: >1 is better for speedup and compression."""

    compression: float | None = None  # baseline size on disk / model size on disk
    acc_delta_pts: float | None = None  # (model - baseline) test accuracy, percentage points
    speedup: dict[Key, float | None] = field(default_factory=dict)  # baseline p50 / model p50
    # the same difference on the same test rows with its 95 % interval and the rows gained / lost
    # (mhsa_cli.metrics.PairedDelta.to_dict); None when the test split is empty
    acc_delta: dict[str, Any] | None = None


@dataclass
class BenchRow:
    """One model's measurements. ``latency`` etc. are keyed by (device, batch size)."""

    name: str
    path: str
    kind: str  # float | pruned | int8 | student
    heads: list[int]
    params: int
    size_bytes: int  # weights file on disk
    weight_bytes: int  # weights in memory
    test_acc: float
    stored_test_acc: float | None  # from the checkpoint's metrics
    is_baseline: bool = False
    quantized_engine: str | None = None  # int8: the engine its weights are packed for
    latency: dict[Key, LatencyStats] = field(default_factory=dict)
    peak_mem_bytes: dict[Key, int | None] = field(default_factory=dict)  # CUDA only, else None
    skipped: dict[Key, str] = field(default_factory=dict)  # cells that do not apply, and why
    ratios: Ratios = field(default_factory=Ratios)
    runtime: str = "torch"  # mhsa_cli.runtimes name
    precision: str = "fp32"  # fp32 | int8 (in that runtime)
    model: str = ""  # the checkpoint's display name (a checkpoint's rows in several runtimes share it)
    parity_max_abs_gap: float | None = None  # ORT rows: max |logits - torch logits| on validation rows
    variant: str = ""  # e.g. "1 thr": an ORT row at another intra-op thread count than torch's

    @property
    def runtime_label(self) -> str:
        from .entries import runtime_label

        return runtime_label(self.runtime, self.precision, self.variant)
    test_macro_f1: float | None = None
    test_classes: dict[str, Any] | None = None  # per-class metrics on the test split (ClassReport JSON)
    # device -> execution providers its session took (session.get_providers(); ORT rows), e.g. a cuda
    # session that fell back: {"cuda": ["CPUExecutionProvider"]} (that cell is skipped, the reason says so)
    providers: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; per-cell data as a list of {device, batch_size, ...} entries."""
        d = {k: v for k, v in asdict(self).items() if k not in ("latency", "peak_mem_bytes", "skipped", "ratios")}
        d["compression"], d["acc_delta_pts"] = self.ratios.compression, self.ratios.acc_delta_pts
        d["acc_delta_paired"] = self.ratios.acc_delta
        keys = list(dict.fromkeys([*self.latency, *self.skipped]))
        d["cells"] = [{"device": dev, "batch_size": b, "skipped": self.skipped.get((dev, b)),
                       "speedup": self.ratios.speedup.get((dev, b)),
                       "peak_mem_bytes": self.peak_mem_bytes.get((dev, b)),
                       **(self.latency[(dev, b)].to_dict() if (dev, b) in self.latency else {})}
                      for dev, b in keys]
        return d


@dataclass
class BenchResult:
    """What :func:`bench` returns; :mod:`mhsa_cli.report.bench` renders it."""

    rows: list[BenchRow]
    baseline: str  # name of the baseline row
    devices: list[str]
    batch_sizes: list[int]
    environment: dict[str, Any]
    config: dict[str, Any]
    task: dict[str, Any]  # task summary (name, split sizes)
    timing_input: str  # how the timing batch was made
    files: list[str] = field(default_factory=list)  # written to --out
    notes: list[str] = field(default_factory=list)  # what was left out, and why
    # per checkpoint and cell with several runtimes: the fastest row
    fastest: list[dict[str, Any]] = field(default_factory=list)

    @property
    def keys(self) -> list[Key]:
        """(device, batch size) cells in table order."""
        return [(d, b) for d in self.devices for b in self.batch_sizes]

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "devices": self.devices, "batch_sizes": self.batch_sizes,
                "task": self.task, "timing_input": self.timing_input, "config": self.config,
                "environment": self.environment, "notes": self.notes, "fastest": self.fastest,
                "rows": [r.to_dict() for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchResult":
        """The inverse of :meth:`to_dict` (a bench.json read back, e.g. a skipped recipe stage's)."""
        return cls([_row_from_dict(r) for r in d["rows"]], d["baseline"], list(d["devices"]),
                   [int(b) for b in d["batch_sizes"]], d.get("environment", {}), d.get("config", {}),
                   d.get("task", {}), d.get("timing_input", ""),
                   notes=list(d.get("notes", [])), fastest=list(d.get("fastest", [])))


def _row_from_dict(d: dict[str, Any]) -> BenchRow:
    stat_names = {f for f in LatencyStats.__dataclass_fields__}
    row = BenchRow(**{k: v for k, v in d.items() if k in BenchRow.__dataclass_fields__ and k != "ratios"})
    row.ratios = Ratios(d.get("compression"), d.get("acc_delta_pts"), acc_delta=d.get("acc_delta_paired"))
    for cell in d.get("cells", []):
        key = (cell["device"], int(cell["batch_size"]))
        if cell.get("skipped"):
            row.skipped[key] = cell["skipped"]
        if "latency_ms_p50" in cell:
            row.latency[key] = LatencyStats(**{k: v for k, v in cell.items() if k in stat_names})
        row.peak_mem_bytes[key] = cell.get("peak_mem_bytes")
        row.ratios.speedup[key] = cell.get("speedup")
    return row
