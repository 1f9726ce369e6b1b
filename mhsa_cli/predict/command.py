"""``mhsa predict``: labels and probabilities for new text, tokenized exactly as at training.

The model comes from the runtime registry (:mod:`.loaders` picks the runtime:
float or int8 checkpoints in torch, export folders in ONNX Runtime, any other
registered runtime by name); the text is encoded with the tokenizer stored
in the checkpoint. Files are streamed in chunks (memory bounded), each chunk
sorted by length into batches cut to their longest row (as in training), and
the predictions written in file order to a temporary file that is renamed into
place at the end, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ..config import PredictConfig
from ..environment import set_threads
from ..errors import MhsaError
from ..progress import NULL, Progress
from ..tasks import hf_text
from ..tasks.encoding import encode_sorted as _encode_sorted, spec_encoder
from . import reader
from .loaders import Loaded, load_for_predict

CHUNK = 4096  # rows read, encoded and predicted at a time (memory bound)
OUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


@dataclass
class Prediction:
    """One row's prediction."""

    line: int  # line in the file (or --text number)
    text: str
    label: str  # predicted class
    probs: list[float]  # softmax over the classes, in ``labels`` order
    true_label: str | None = None


@dataclass
class PredictResult:
    """What :func:`predict` returns (the CLI renders it)."""

    model: str
    runtime: str
    kind: str
    labels: list[str]
    rows: int
    shown: list[Prediction]  # the first ``cfg.show`` rows (all of --text)
    label_column: str | None  # the label column used for accuracy, or None
    label_note: str  # says whether a label column was used or ignored
    correct: int = 0
    unknown_labels: int = 0  # rows whose label is not a class of the model (counted wrong)
    out: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.rows if self.label_column and self.rows else None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _check_out(cfg: PredictConfig) -> str | None:
    """Checks on ``--out`` before any work: its format, folder, and no silent overwrite."""
    if not cfg.out:
        return None
    out = Path(cfg.out)
    fmt = OUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise MhsaError(f"--out {out}: use a .csv or .jsonl file name")
    if out.is_dir():
        raise MhsaError(f"--out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise MhsaError(f"--out {out}: folder {out.parent} does not exist")
    if cfg.data and _same_file(out, cfg.data):
        raise MhsaError(f"--out {out} is the --data file; choose another file name")
    if out.exists() and not cfg.force:
        raise MhsaError(f"--out {out} exists; pass --force to replace it")
    return fmt


def _same_file(out: Path, data: str) -> bool:
    """``out`` would overwrite ``data`` (same path after symlinks, or a hard link to it)."""
    from ..checkpoint import resolve_path

    if resolve_path(out, "--out") == resolve_path(data, "--data"):
        return True
    try:
        return out.exists() and os.path.samefile(out, data)
    except OSError:
        return False


def predict_texts(loaded: Loaded, texts: list[str], batch_size: int = 256, tokenizer: Any = None) -> torch.Tensor:
    """(N, C) probabilities of ``texts`` in order (softmax of the model's logits).

    Args:
        loaded: a model from :func:`load_for_predict`.
        texts: raw strings.
        batch_size: rows per forward call.
        tokenizer: the spec's tokenizer if already built.
    """
    own, special, pad_id = spec_encoder(loaded.spec)
    probs = torch.empty(len(texts), len(loaded.spec["labels"]))
    with torch.inference_mode():
        for pos, x in _encode_sorted(tokenizer or own, texts, int(loaded.spec["max_len"]), batch_size, special,
                                     pad_id):
            logits = loaded.call(x)  # (B, C)
            if logits.shape[-1] != probs.shape[1]:  # a model that is not the one its labels describe
                raise MhsaError(f"the model gives {logits.shape[-1]} scores per row but has {probs.shape[1]} labels")
            probs[pos] = logits.float().softmax(-1)
    return probs


def _chunks(rows: Iterator[reader.Row], size: int) -> Iterator[list[reader.Row]]:
    chunk: list[reader.Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Writer:
    """Predictions to a temporary file next to ``out``; :meth:`commit` renames it into place."""

    def __init__(self, out: str, fmt: str, labels: list[str], with_truth: bool):
        self.out, self.fmt, self.labels = out, fmt, labels
        fd, self.tmp = tempfile.mkstemp(prefix=f".{Path(out).name}.", suffix=".tmp", dir=Path(out).parent)
        self.fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.csv = csv.writer(self.fh) if fmt == "csv" else None
        self.with_truth = with_truth
        if self.csv:
            self.csv.writerow(["line", "text", "label", "probability", *(f"prob_{c}" for c in labels),
                               *(["true_label"] if with_truth else [])])

    def write(self, p: Prediction) -> None:
        if self.csv:
            self.csv.writerow([p.line, p.text, p.label, f"{max(p.probs):.6g}", *(f"{v:.6g}" for v in p.probs),
                               *([p.true_label] if self.with_truth else [])])
        else:
            obj = {"line": p.line, "text": p.text, "label": p.label, "probability": round(max(p.probs), 6),
                   "probs": {c: round(v, 6) for c, v in zip(self.labels, p.probs)}}
            if self.with_truth:
                obj["true_label"] = p.true_label
            self.fh.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def commit(self) -> None:
        self.fh.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        self.fh.close()
        Path(self.tmp).unlink(missing_ok=True)


def _label_note(src: reader.Source | None, cfg: PredictConfig) -> tuple[str | None, str]:
    if src is None:
        return None, "texts from --text: no labels"
    if src.has_labels and not cfg.ignore_labels:
        return src.label_column, f"label column '{src.label_column}' used to measure accuracy (not as input)"
    if src.has_labels:
        return None, f"label column '{src.label_column}' ignored (--ignore-labels)"
    return None, f"no label column '{src.label_column}': accuracy not measured"


def predict(cfg: PredictConfig, progress: Progress = NULL) -> PredictResult:
    """Predict labels and probabilities for ``cfg.text`` or the rows of ``cfg.data``.

    Raises:
        MhsaError: bad model folder, a non-text model, neither or both of --text and
            --data, a bad data file (missing text column, empty text, not utf-8),
            or a bad ``--out``; all checked before anything is written.
    """
    if bool(cfg.text) == bool(cfg.data):
        raise MhsaError("give --text (repeatable) or --data FILE, not both" if cfg.text else
                        "nothing to predict: give --text \"...\" (repeatable) or --data FILE")
    out_fmt = _check_out(cfg)
    set_threads(cfg.threads)
    loaded = load_for_predict(cfg.checkpoint, cfg.runtime, cfg.precision)
    spec = loaded.spec
    if spec.get("name") not in ("text", hf_text.NAME):
        raise MhsaError(f"{cfg.checkpoint}: predict takes text, but this model's task is "
                        f"'{spec.get('name')}' (train it with --data FILE)")
    tok, labels = spec_encoder(spec)[0], list(spec["labels"])
    src = None
    if cfg.data:
        fmt, text_col, label_col = reader.options({"format": cfg.format, "text_column": cfg.text_column,
                                                   "label_column": cfg.label_column}, spec)
        src = reader.scan(cfg.data, fmt, text_col, label_col, cfg.split)  # whole file checked before work
    label_col, note = _label_note(src, cfg)
    result = PredictResult(str(cfg.checkpoint), loaded.runtime, loaded.kind, labels, 0, [], label_col, note,
                           out=cfg.out)
    rows = reader.rows(src) if src else reader.text_rows(list(cfg.text))
    writer = _Writer(cfg.out, out_fmt, labels, label_col is not None) if cfg.out else None
    show = len(cfg.text) if cfg.text else cfg.show
    start = time.perf_counter()
    try:
        with progress.task("predict", total=src.rows if src else len(cfg.text)) as bar:
            for chunk in _chunks(rows, CHUNK):
                _predict_chunk(loaded, tok, chunk, cfg.batch_size, labels, result, writer, show)
                bar.advance(len(chunk))
        if writer:
            writer.commit()
    except BaseException:
        if writer:
            writer.abort()
        raise
    result.seconds = time.perf_counter() - start
    if result.unknown_labels:
        result.notes.append(f"{result.unknown_labels} rows have a label the model does not know (counted wrong)")
    return result


def _predict_chunk(loaded: Loaded, tok: Any, chunk: list[reader.Row], batch_size: int, labels: list[str],
                   result: PredictResult, writer: _Writer | None, show: int) -> None:
    """Predict one chunk of rows, update counts, write and keep the first ``show`` rows."""
    probs = predict_texts(loaded, [text for _, text, _ in chunk], batch_size, tok)  # (n, C)
    best = probs.argmax(-1).tolist()
    known = set(labels)
    for (line, text, truth), k, p in zip(chunk, best, probs.tolist()):
        pred = Prediction(line, text, labels[k], p, truth if result.label_column else None)
        if result.label_column:
            result.correct += int(truth == labels[k])
            result.unknown_labels += int(truth not in known)
        if writer:
            writer.write(pred)
        if len(result.shown) < show:
            result.shown.append(pred)
        result.rows += 1
