"""``hf-text``: the user's text file, tokenized with a stored ``tokenizers`` tokenizer.

The task of imported encoders (``mhsa import``) and of ``mhsa train --init`` on
them: rows are read, labelled and split exactly as the ``text`` task does
(same reader, same stratified split), but tokens come from the checkpoint's
tokenizer (a Hugging Face ``tokenizer.json``, kept as a dict at
``checkpoint.json -> task -> tokenizer``; special tokens such as [CLS]/[SEP]
are added by its post-processor), truncated to ``max_len`` and right-padded
with the model's ``pad_id``.

A spec without ``path`` (an import without data) still carries the tokenizer
and labels; rebuilding its data is a one-line error that says how to attach a file.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from ..errors import MhsaError
from . import TASKS, Split, TaskData, TaskInfo, register
from . import text as _text

NAME = "hf-text"
FILE_OPTIONS = ("path", "test_path", "split", "test_split", "format", "text_column", "label_column", "max_len",
                "val_fraction", "test_fraction")
NO_DATA = ("has no data (imported without --data): fine-tune it with `mhsa train --init CKPT --data FILE`, "
           "or import it again with `mhsa import FOLDER --data FILE`")


def make_tokenizer(tokenizer_json: dict[str, Any], max_len: int) -> Any:
    """The ``tokenizers.Tokenizer`` of a stored JSON dict, truncating to ``max_len``, no padding.

    Raises:
        MhsaError: ``tokenizers`` missing or the JSON is not a tokenizer.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - a dependency of the hf extra
        raise MhsaError("the 'tokenizers' package is needed for this checkpoint's tokenizer "
                        "(pip install tokenizers)") from None
    try:
        tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    except Exception as exc:  # the Rust side raises a bare Exception
        raise MhsaError(f"stored tokenizer is not a valid tokenizers JSON ({str(exc).splitlines()[0]})") from None
    tok.no_padding()
    tok.enable_truncation(max_len)
    return tok


def encode(texts: list[str], tokenizer_json: dict[str, Any], max_len: int, pad_id: int) -> torch.Tensor:
    """Texts -> (N, max_len) int64 ids: tokenizer's special tokens included, truncated, padded with ``pad_id``."""
    tok = make_tokenizer(tokenizer_json, max_len)
    x = torch.full((len(texts), max_len), pad_id, dtype=torch.long)  # (N, T)
    for row, enc in enumerate(tok.encode_batch([str(t) for t in texts])):
        ids = enc.ids[:max_len]
        x[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return x


def _labels(rows: list, test_rows: list, opts: dict[str, Any], known: list[str] | None) -> list[str]:
    """Sorted data labels; a model's own label order when the data's labels are all among them."""
    labels = _text._labels_of(rows, test_rows, opts)
    if known and set(labels) <= set(known):
        return list(known)
    return labels


def build(seed: int = 0, tokenizer: dict[str, Any] | None = None, pad_id: int = 0,
          labels: list[str] | None = None, stored: dict[str, Any] | None = None,
          max_positions: int = 512, **options: Any) -> TaskData:
    """Read, split and tokenize the user's file.

    Args:
        seed: split seed.
        tokenizer: tokenizers JSON (dict).
        pad_id: padding id of the model.
        labels: the model's labels; kept (with their order) if the data's labels are among them.
        stored: a spec to match (sha256 of the files).
        max_positions: the model's positions: the most ``max_len`` may be.
        **options: the ``text`` task's file options (:data:`FILE_OPTIONS`); ``max_len`` default
            ``auto``: the 99th percentile of the training split's token counts (special tokens
            included), at most ``max_positions``.

    Raises:
        MhsaError: no tokenizer, a bad option, or what the ``text`` task refuses.
    """
    if not tokenizer:
        raise MhsaError(f"task '{NAME}' needs a checkpoint's tokenizer: use it through `mhsa import FOLDER "
                        "--data FILE` or `mhsa train --init CKPT --data FILE` (an imported folder needs tokenizer.json)")
    unknown = sorted(set(options) - set(FILE_OPTIONS))
    if unknown:
        raise MhsaError(f"task '{NAME}' has no option '{unknown[0]}'; options: {', '.join(FILE_OPTIONS)}")
    opts = _text._options({"max_len": "auto", **options})
    read = _text.read_sources(opts)  # files or hf: splits, as the text task reads them
    if stored is not None:
        _text.check_unchanged(read, opts, stored)
    rows, test_rows = read["path"][0], read["test_path"][0] if "test_path" in read else None
    labels = _labels(rows, test_rows or [], opts, labels)
    parts = _text._split_rows(rows, test_rows, labels, opts, seed)
    auto = opts["max_len"] is None
    if auto:  # from the training split only (as the text task)
        counts = [len(e.ids) for e in make_tokenizer(tokenizer, max_positions).encode_batch(
            [r[1] for _, r in parts["train"]])]
        opts = {**opts, "max_len": min(max_positions, _text.auto_max_len(counts))}
    class_id = {label: i for i, label in enumerate(labels)}
    splits = []
    for name in ("train", "val", "test"):
        texts = [r[1] for _, r in parts[name]]
        split = Split(encode(texts, tokenizer, opts["max_len"], pad_id),  # (N, max_len)
                      torch.tensor([class_id[r[2]] for _, r in parts[name]], dtype=torch.long),
                      ragged=True, pad_id=pad_id)  # batches cut to their longest row
        split._texts = texts
        splits.append(split)
    spec = dict(name=NAME, seed=seed, **{k: opts[k] for k in FILE_OPTIONS}, labels=labels, pad_id=pad_id,
                sha256={key: sha for key, (_, sha) in read.items()}, tokenizer=tokenizer)
    spec["max_len_auto"] = bool(stored.get("max_len_auto", False)) if stored is not None else auto
    vocab = make_tokenizer(tokenizer, opts["max_len"]).get_vocab_size(with_added_tokens=True)
    return TaskData(spec, "tokens", vocab, 0, opts["max_len"], list(labels), *splits)


def from_spec(spec: dict[str, Any]) -> TaskData:
    """Rebuild the data of a stored ``hf-text`` spec (same files, split and tokenizer).

    Raises:
        MhsaError: the spec has no data file (:data:`NO_DATA`), or a file is missing or changed.
    """
    if not spec.get("path"):
        raise MhsaError(f"this checkpoint {NO_DATA}")
    opts = {k: spec[k] for k in FILE_OPTIONS if spec.get(k) is not None}
    return build(int(spec.get("seed", 0)), spec.get("tokenizer"), int(spec.get("pad_id", 0)),
                 list(spec["labels"]), stored=spec, **opts)


def data_spec(tokenizer: dict[str, Any] | None, pad_id: int, labels: list[str], max_len: int) -> dict[str, Any]:
    """The spec of a checkpoint without data: its tokenizer, padding id, labels and input length."""
    return dict(name=NAME, seed=0, path=None, max_len=max_len, labels=list(labels), pad_id=pad_id,
                tokenizer=tokenizer)


register(TaskInfo(
    name=NAME,
    description="your text file tokenized with a checkpoint's own tokenizer (mhsa import / train --init)",
    input_kind="tokens",
    size="your file: 80 / 10 / 10 % stratified, or test_path",
    classes="from labels",
    build=lambda seed=0, **o: build(seed, **o),
    from_spec=from_spec,
    options={k: v for k, v in TASKS["text"].options.items() if k in FILE_OPTIONS},
))
