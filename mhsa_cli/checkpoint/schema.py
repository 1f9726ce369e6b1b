"""The JSON schema of ``checkpoint.json``: the types of every field a command reads, checked on load."""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import MhsaError, cap
from ..model import ModelConfig
from ..registry import CHECKPOINT_KINDS

FORMAT = "mhsa-checkpoint"
VERSION = 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


_MODEL_TYPES = {"input_kind": (str, "a string"), "max_len": (_is_int, "an integer"),
                "num_classes": (_is_int, "an integer"), "vocab_size": (_is_int, "an integer"),
                "feature_dim": (_is_int, "an integer"), "d_model": (_is_int, "an integer"),
                "heads": (lambda v: isinstance(v, list) and all(_is_int(h) for h in v), "a list of integers"),
                "head_dim": (_is_int, "an integer"),
                "d_ff": (lambda v: _is_int(v) or isinstance(v, list) and all(_is_int(f) for f in v),
                         "an integer or a list of integers (per layer)"),
                "dropout": (_is_num, "a number"), "pooling": (str, "a string"),
                # the BERT-family switches (absent from older checkpoints: ModelConfig's defaults)
                "norm": (str, "a string"), "embed_norm": (bool, "true or false"),
                "final_norm": (bool, "true or false"), "type_vocab_size": (_is_int, "an integer"),
                "pos_offset": (_is_int, "an integer"), "pad_id": (_is_int, "an integer"),
                "pooler": (str, "a string"), "activation": (str, "a string"), "ln_eps": (_is_num, "a number")}
# every field the first checkpoint format wrote (always present since): a missing one is a damaged
# file, never a default (a default pooling or width would build another model than the one saved)
_MODEL_REQUIRED = ("input_kind", "max_len", "num_classes", "vocab_size", "feature_dim", "d_model", "heads",
                   "head_dim", "d_ff", "dropout", "pooling")
_OPTIONAL_MAPPINGS = ("config", "metrics", "environment", "extra")
_LINEAGE_TYPES = {"operation": (str, "a string"), "parent": ((str, type(None)), "a string or null"),
                  "parent_id": ((str, type(None)), "a string or null"), "settings": (dict, "a mapping"),
                  "time": (str, "a string")}


def _check_type(where: str, value: Any, rule: tuple[Any, str]) -> None:
    test, what = rule
    ok = test(value) if callable(test) and not isinstance(test, type) else isinstance(value, test)
    if not ok:
        raise MhsaError(f"'{where}' must be {what}, got {cap(json.dumps(value, default=str), 60)}")


def validate_meta(meta: Any) -> None:
    """Check the types of every field of ``checkpoint.json`` that a command reads.

    Checked: ``format``, ``version``, ``kind`` (a registered kind), ``model`` (every
    :class:`ModelConfig` field and its validation), ``task`` (a mapping with a string
    ``name``), ``config``/``metrics``/``environment``/``extra`` (mappings when present),
    ``lineage`` (a list of steps with a string ``operation``), ``id`` (a string).

    Raises:
        MhsaError: the first field at fault, by its JSON path (no path prefix).
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MhsaError("not an mhsa checkpoint (no \"format\": \"mhsa-checkpoint\")")
    for key in ("kind", "model", "task"):
        if key not in meta:
            raise MhsaError(f"no '{key}'")
    _check_type("version", meta.get("version", VERSION), (_is_int, "an integer"))
    if meta.get("version", VERSION) > VERSION:
        raise MhsaError(f"format version {meta['version']} is newer than this mhsa reads ({VERSION})")
    _check_type("kind", meta["kind"], (str, "a string"))
    if meta["kind"] not in CHECKPOINT_KINDS:
        raise MhsaError(f"unknown kind '{cap(meta['kind'], 40)}'; known: {', '.join(CHECKPOINT_KINDS)}")
    _validate_model(meta["model"])
    _check_type("task", meta["task"], (dict, "a mapping"))
    _check_type("task.name", meta["task"].get("name"), (str, "a string"))
    if "labels" in meta["task"]:
        from ..labels import check_labels

        check_labels(meta["task"]["labels"], "'task.labels'", meta["model"]["num_classes"])
    for key in _OPTIONAL_MAPPINGS:
        if key in meta:
            _check_type(key, meta[key], (dict, "a mapping"))
    if "id" in meta:
        _check_type("id", meta["id"], (str, "a string"))
    _check_type("lineage", meta.get("lineage", []), (list, "a list"))
    for i, step in enumerate(meta.get("lineage", [])):
        _check_type(f"lineage[{i}]", step, (dict, "a mapping"))
        _check_type(f"lineage[{i}].operation", step.get("operation"), (str, "a string"))
        for key, rule in _LINEAGE_TYPES.items():
            if key in step:
                _check_type(f"lineage[{i}].{key}", step[key], rule)


def _validate_model(model: Any) -> None:
    _check_type("model", model, (dict, "a mapping"))
    for key in _MODEL_REQUIRED:
        if key not in model:
            raise MhsaError(f"no 'model.{key}'")
    for key, value in model.items():
        if key in _MODEL_TYPES:
            _check_type(f"model.{key}", value, _MODEL_TYPES[key])
    try:
        ModelConfig.from_dict(model)
    except MhsaError as exc:
        raise MhsaError(f"bad model config ({exc})") from None
