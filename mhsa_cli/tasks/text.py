"""``text``: text classification from the user's own CSV / TSV / JSONL files,
or from a Hugging Face data set read offline (``path=hf:NAME[:CONFIG]`` or
``hf:FOLDER``, splits ``split`` / ``test_split``; :mod:`.hf_datasets`).

Rows are read by :mod:`.text_files` (the one reader, shared with ``mhsa predict``:
quoted fields, embedded commas and newlines, utf-8 with optional BOM, a row with
more or fewer fields than the header refused). Class ids follow the sorted
unique label strings. The split is stratified and deterministic from ``seed``;
the tokenizer (:mod:`.tokenizer`: word, char or bpe) is trained on the
training split only (0 = ``<pad>``, 1 = ``<unk>``).

``max_len`` defaults to the 99th percentile of the training split's token
counts (at most :data:`MAX_LEN_CAP`): longer texts are truncated, and batches
are cut to their longest row anyway (``Split.ragged``), so a generous length
costs little.

The spec stores the tokenizer (the ``tokenizers`` library's JSON, a dict, at
``spec["tokenizer"]``; its kind at ``spec["tokenizer_kind"]``), the labels and
the sha256 of every data file (of an hf: split's rows), so :func:`from_spec` rebuilds exactly the same
tensors, or refuses if a file changed; :func:`spec_tokenizer` rebuilds the stored
tokenizer for inference (``mhsa predict``). Checkpoints made before the tokenizer was stored
as JSON (``spec["vocab"]``, ``spec["tokenizer"]`` a string) still load.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import MhsaError, choice
from . import OptionType, Split, TaskData, TaskInfo, register
from . import hf_datasets as hfd
from . import tokenizer as tk
from .split import check_fraction, stratified_split
from .text_files import Row, read_rows

FORMATS = ("auto", "csv", "tsv", "jsonl")
TOKENIZERS = tuple(tk.TOKENIZERS)
MAX_LEN_PERCENTILE, MAX_LEN_CAP = 99, 256
DEFAULTS: dict[str, Any] = dict(
    path=None, test_path=None, split=None, test_split=None, format="auto", text_column="text", label_column="label",
    tokenizer="word", max_len=None, lowercase=True, min_freq=2, max_vocab=20000,
    val_fraction=0.1, test_fraction=0.1,
)
# ``mhsa train`` defaults for text (see TaskInfo.train_defaults and the README).
TEXT_TRAIN_DEFAULTS: dict[str, Any] = dict(layers=1, d_model=64, heads=4, d_ff=128, dropout=0.3,
                                           pooling="meanmax", epochs=30, batch_size=32, lr=3e-3,
                                           weight_decay=0.01, patience=5, token_dropout=0.1)


# ---------------------------------------------------------------- options
def _to_bool(name: str, value: Any) -> bool:
    """Parse a bool option given as bool, 0/1 or a word like 'true' / 'no'."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if isinstance(value, bool):
        return value
    key = str(value).strip().lower()
    if key not in words:
        raise MhsaError(f"text task: {name} must be true or false, got {value!r}")
    return words[key]


def _to_int(name: str, value: Any, low: int) -> int:
    """Parse an integer option and check it is >= ``low``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MhsaError(f"text task: {name} must be an integer, got {value!r}") from None
    if number < low:
        raise MhsaError(f"text task: {name} must be >= {low}, got {number}")
    return number


def _options(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults, coerce types and validate the text task's options."""
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise MhsaError(f"task 'text' has no option '{unknown[0]}'; options: {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}
    if not opts["path"]:
        raise MhsaError("text task: option 'path' is required (a .csv, .tsv or .jsonl file, or hf:NAME)")
    for key in ("path", "test_path"):
        if opts[key]:
            value = str(opts[key])
            opts[key] = hfd.normalise(value) if hfd.is_ref(value) else os.path.abspath(value)
    _check_splits(opts)
    opts["format"] = choice("format", str(opts["format"]), FORMATS)
    opts["tokenizer"] = choice("tokenizer", str(opts["tokenizer"]), TOKENIZERS)
    opts["text_column"], opts["label_column"] = str(opts["text_column"]), str(opts["label_column"])
    opts["lowercase"] = _to_bool("lowercase", opts["lowercase"])
    opts["max_len"] = None if opts["max_len"] in (None, "auto") else _to_int("max_len", opts["max_len"], 1)
    opts["min_freq"] = _to_int("min_freq", opts["min_freq"], 1)
    opts["max_vocab"] = _to_int("max_vocab", opts["max_vocab"], 3)
    opts["val_fraction"] = check_fraction("val_fraction", opts["val_fraction"], "text task")
    opts["test_fraction"] = check_fraction("test_fraction", opts["test_fraction"], "text task")
    return opts


def _check_splits(opts: dict[str, Any]) -> None:
    """``split`` / ``test_split`` only where an ``hf:`` data set reads them.

    Raises:
        MhsaError: a split option with file data, or test_split beside a test file.
    """
    hf_path, hf_test = hfd.is_ref(opts["path"]), hfd.is_ref(opts["test_path"])
    if opts["split"] is not None and not hf_path:
        raise MhsaError("text task: split is for hf: data (--data hf:NAME); a file has no splits")
    if opts["test_split"] is not None and opts["test_path"] and not hf_test:
        raise MhsaError("text task: give test_path=FILE or test_split=NAME, not both")
    if opts["test_split"] is not None and not (hf_path or hf_test):
        raise MhsaError("text task: test_split is for hf: data (--data hf:NAME); a file has no splits")


def where(opts: dict[str, Any], key: str) -> str:
    """What option ``key`` (path or test_path) reads, for messages: a file, or an hf: data set's split."""
    ref = opts[key] or opts["path"]
    if hfd.is_ref(ref):
        return f"{ref} split '{source_split(opts, key)}'"
    return str(ref)


def source_split(opts: dict[str, Any], key: str) -> str:
    """The hf: split that option ``key`` reads: ``split`` (default train) or ``test_split`` (default test)."""
    return (opts["split"] or "train") if key == "path" else (opts["test_split"] or "test")


def read_sources(opts: dict[str, Any]) -> dict[str, tuple[list[Row], str]]:
    """Rows and digest of the training data (``path``) and, if given, the test data
    (``test_path``, or ``test_split`` of the same hf: data set).

    Returns:
        {"path": (rows, sha256)[, "test_path": (rows, sha256)]}: a file's sha256, or of an hf: split's rows.

    Raises:
        MhsaError: see :func:`.text_files.read_rows` and :func:`.hf_datasets.read_rows`.
    """
    keys = ["path"] + (["test_path"] if opts["test_path"] or opts["test_split"] is not None else [])
    out = {}
    for key in keys:
        ref = opts[key] or opts["path"]
        if hfd.is_ref(ref):
            out[key] = hfd.read_rows(ref, source_split(opts, key), opts["text_column"], opts["label_column"])
        else:
            out[key] = read_rows(ref, opts)
    return out


# ---------------------------------------------------------------- tokens
def spec_tokenizer(spec: dict[str, Any]):
    """The ``tokenizers.Tokenizer`` of a ``text`` spec (older specs: rebuilt from ``vocab``).

    Raises:
        MhsaError: the spec holds no usable tokenizer.
    """
    stored = spec.get("tokenizer")
    if isinstance(stored, dict):
        return tk.from_json(stored)
    if isinstance(stored, str) and isinstance(spec.get("vocab"), list):  # before tokenizer JSON
        return tk.from_vocab(list(spec["vocab"]), stored, bool(spec.get("lowercase", True)))
    raise MhsaError("stored 'text' task spec has no tokenizer; cannot encode text")


def auto_max_len(counts: list[int]) -> int:
    """The :data:`MAX_LEN_PERCENTILE`-th percentile of token ``counts`` (nearest rank),
    between 1 and :data:`MAX_LEN_CAP`."""
    ranked = sorted(counts) or [1]
    k = max(0, -(-len(ranked) * MAX_LEN_PERCENTILE // 100) - 1)  # nearest-rank index
    return int(min(MAX_LEN_CAP, max(1, ranked[k])))


# ---------------------------------------------------------------- assembly
def _labels_of(rows: list[Row], test_rows: list[Row], opts: dict[str, Any]) -> list[str]:
    """Sorted unique labels of the training file; test-file labels must be among them."""
    labels = sorted({label for _, _, label in rows})
    if len(labels) < 2:
        raise MhsaError(f"{where(opts, 'path')} has a single class ({labels[0]!r}); "
                        f"need at least 2 labels in column '{opts['label_column']}'")
    extra = sorted({label for _, _, label in test_rows} - set(labels))
    if extra:
        raise MhsaError(f"{where(opts, 'test_path')}: label {extra[0]!r} does not occur in {where(opts, 'path')}")
    return labels


def _split_rows(rows: list[Row], test_rows: list[Row] | None, labels: list[str],
                opts: dict[str, Any], seed: int) -> dict[str, list[tuple[str, Row]]]:
    """Stratified split -> {split: [(file option, row), ...]}; rows keep file order."""
    class_id = {label: i for i, label in enumerate(labels)}
    test_frac = 0.0 if test_rows is not None else opts["test_fraction"]
    parts = stratified_split([class_id[r[2]] for r in rows], opts["val_fraction"], test_frac, seed)
    out = {name: [("path", rows[i]) for i in idx] for name, idx in zip(("train", "val", "test"), parts)}
    if test_rows is not None:
        out["test"] = [("test_path", r) for r in test_rows]
    for name in ("val", "test"):
        if not out[name]:
            raise MhsaError(f"{where(opts, 'path')}: too few rows ({len(rows)}) to split off a "
                            f"{'validation' if name == 'val' else 'test'} set")
    return out


def check_unchanged(read: dict[str, tuple[list[Row], str]], opts: dict[str, Any], stored: dict[str, Any]) -> None:
    """Refuse data whose digest differs from the checkpoint's (``stored["sha256"]``).

    Raises:
        MhsaError: a file or an hf: split changed since the checkpoint was made.
    """
    for key, (_, sha) in read.items():
        if sha != stored.get("sha256", {}).get(key):
            what = "data file" if not hfd.is_ref(opts[key] or opts["path"]) else "hf data"
            raise MhsaError(f"{what} {where(opts, key)} changed since the checkpoint was made (sha256 differs)")


def _assemble(seed: int, opts: dict[str, Any], stored: dict[str, Any] | None = None) -> TaskData:
    """Read, split, tokenize and encode. ``stored``: spec to match (sha256, vocab, labels)."""
    if stored is not None:
        for key in ("path", "test_path"):
            if opts[key] and not hfd.is_ref(opts[key]) and not os.path.exists(opts[key]):
                raise MhsaError(f"data file {opts[key]} not found (needed to rebuild the checkpoint's task)")
    read = read_sources(opts)
    if stored is not None:
        check_unchanged(read, opts, stored)
    rows, test_rows = read["path"][0], read["test_path"][0] if "test_path" in read else None
    labels = _labels_of(rows, test_rows or [], opts)
    parts = _split_rows(rows, test_rows, labels, opts, seed)
    texts = {name: [r[1] for _, r in part] for name, part in parts.items()}
    if stored is not None:  # encode with the checkpoint's tokenizer, never a rebuilt one
        tok, labels = spec_tokenizer(stored), list(stored["labels"])
    else:
        tok = tk.train_tokenizer(opts["tokenizer"], texts["train"], opts["max_vocab"],
                                 opts["lowercase"], opts["min_freq"])
    auto = opts["max_len"] is None
    if auto:  # from the training split only
        opts = {**opts, "max_len": auto_max_len(tk.token_counts(tok, texts["train"]))}
    class_id = {label: i for i, label in enumerate(labels)}
    splits = []
    for name in ("train", "val", "test"):
        x = tk.encode(tok, texts[name], opts["max_len"])  # (N, max_len)
        y = torch.tensor([class_id[r[2]] for _, r in parts[name]], dtype=torch.long)  # (N,)
        split = Split(x, y, ragged=True)
        split._rows = [(key, r[0]) for key, r in parts[name]]  # (file option, line number)
        split._texts = texts[name]
        splits.append(split)
    spec = dict(name="text", seed=seed, **opts, tokenizer_kind=opts["tokenizer"], labels=labels,
                sha256={key: sha for key, (_, sha) in read.items()})
    spec["tokenizer"] = tk.to_json(tok)
    spec["max_len_auto"] = bool(stored.get("max_len_auto", False)) if stored is not None else auto
    return TaskData(spec, "tokens", tok.get_vocab_size(), 0, opts["max_len"], list(labels), *splits)


def build(seed: int = 0, **options: Any) -> TaskData:
    """Build the ``text`` task from the user's file(s).

    Args:
        seed: split seed.
        **options: see ``TaskInfo.options`` (``path`` is required).

    Returns:
        TaskData with int64 ``x`` of shape (N, max_len); spec holds vocab, labels, sha256.

    Raises:
        MhsaError: bad option, unreadable / empty / malformed file, missing column,
            single class, or too few rows to split.
    """
    return _assemble(int(seed), _options(options))


def from_spec(spec: dict[str, Any]) -> TaskData:
    """Rebuild a ``text`` task from a checkpoint's spec with its stored vocabulary.

    Args:
        spec: ``TaskData.spec`` as stored.

    Returns:
        The same splits and tensors as when the spec was made.

    Raises:
        MhsaError: a data file is missing or changed, or the spec is incomplete.
    """
    missing = [k for k in ("path", "tokenizer", "labels", "sha256", "max_len") if k not in spec]
    if missing:
        raise MhsaError(f"stored 'text' task spec lacks '{missing[0]}'; cannot rebuild the data")
    raw = {k: spec[k] for k in DEFAULTS if k in spec}
    raw["tokenizer"] = spec.get("tokenizer_kind", spec["tokenizer"])  # older specs: the kind itself
    opts = _options(raw)
    return _assemble(int(spec.get("seed", 0)), opts, stored=spec)


register(TaskInfo(
    name="text",
    description="text classification from your .csv / .tsv / .jsonl file or hf: data set (path=...)",
    input_kind="tokens",
    size="your file: 80 / 10 / 10 % stratified, or test_path",
    classes="from labels",
    build=build,
    from_spec=from_spec,
    # Real text is small data: a narrow one-layer model with dropout overfits less
    # (on trec's validation split: 2 layers d=64 without dropout 78.7-80.0 %, 1 layer
    # d=64 dropout 0.3 mean+max pooling 84.2 %); early stopping on validation, never test.
    train_defaults=TEXT_TRAIN_DEFAULTS,
    options={
        "path": "data file: .csv, .tsv or .jsonl with a text and a label column, or a Hugging Face data set "
                "hf:NAME[:CONFIG] (local cache only, never downloaded) or hf:FOLDER (save_to_disk or data "
                "files) (required)",
        "test_path": "separate test file in the same format, or hf:... (default: split off test_fraction)",
        "split": "hf: data: the split to train on (default train); validation is split off it",
        "test_split": "hf: data: the split to test on, e.g. test (default: split off test_fraction; "
                      "with test_path=hf:... its split, default test)",
        "format": "auto (by extension), csv, tsv or jsonl (default auto)",
        "text_column": "column / field holding the text (default text)",
        "label_column": "column / field holding the label (default label)",
        "tokenizer": "word (words and punctuation), char, or bpe (subwords learned on the training "
                     "split, size max_vocab) (default word)",
        "max_len": "tokens per text; longer texts are truncated (default auto: the 99th percentile "
                   f"of the training split's token counts, at most {MAX_LEN_CAP})",
        "lowercase": "lowercase text before tokenizing (default true)",
        "min_freq": "keep tokens seen at least this often in train; rarer ones become <unk>, so the model "
                    "learns <unk> (default 2)",
        "max_vocab": "vocabulary size incl. <pad> and <unk>; for bpe the subword vocabulary size "
                     "(default 20000)",
        "val_fraction": "validation share of path, stratified (default 0.1)",
        "test_fraction": "test share of path, stratified; ignored with test_path (default 0.1)",
    },
    option_types={
        **{k: OptionType(str) for k in ("path", "test_path", "split", "test_split", "format", "text_column",
                                        "label_column", "tokenizer")},
        "max_len": OptionType(int, 1, 65536), "lowercase": OptionType(bool), "min_freq": OptionType(int, 1, 1e9),
        "max_vocab": OptionType(int, 3, 10_000_000), "val_fraction": OptionType(float),
        "test_fraction": OptionType(float),
    },
))
