"""``mhsa import``: a local Hugging Face BERT-family folder becomes an mhsa checkpoint.

Reads ``config.json``, ``model.safetensors`` (or its shards) and
``tokenizer.json`` directly (``transformers`` is not needed), builds the
:class:`~mhsa_cli.model.MHSAClassifier` the config describes (post-LN blocks,
embedding LayerNorm, token types, offset positions, pooler, GELU variant, eps;
see :mod:`.families`) and copies every tensor through the family's mapping
table, checking each shape. Pickle weights (``.bin``, ``.pt``, ...) are refused
and never opened. The tokenizer is stored at ``checkpoint.json -> task ->
tokenizer``; with ``--data`` the user's file becomes the task (``hf-text``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import check_output_dir, make_meta, save_model
from ..config import ImportConfig, to_dict
from ..errors import MhsaError
from ..model import ModelConfig, build_model, count_parameters
from ..progress import NULL, Progress
from . import hf_check
from .families import FAMILIES, Family, family_of, labels_of, supported

__all__ = ["import_hf", "ImportResult", "FAMILIES", "supported", "read_folder"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# what a sentence-transformers folder adds beside the Hugging Face files (ignored: mhsa pools the
# first token through the model's own pooler and fine-tunes it; their pooling/normalise modules are not used)
SENTENCE_TRANSFORMERS = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")
SHARD_INDEX = "model.safetensors.index.json"


@dataclass
class HFFolder:
    """What :func:`read_folder` found (nothing is unpickled; weights are safetensors)."""

    path: Path
    config: dict[str, Any]
    weight_files: list[Path]
    tokenizer: dict[str, Any] | None  # tokenizer.json as a dict


@dataclass
class ImportResult:
    """What :func:`import_hf` returns (the CLI renders it)."""

    out: str
    architecture: str
    model: dict[str, Any]  # ModelConfig as a dict
    labels: list[str]
    fresh: list[str]  # modules initialised fresh (seeded), e.g. head
    ignored: list[str]  # HF tensors not used (e.g. a masked-LM head)
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading

def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MhsaError(f"{path}: {what} is not valid JSON ({exc})") from None


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of ``folder`` (single file or the shards of an index).

    Raises:
        MhsaError: only pickle weights (never opened), or no weights at all.
    """
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    if (folder / SHARD_INDEX).is_file():
        index = _read_json(folder / SHARD_INDEX, SHARD_INDEX)
        names = sorted(set((index.get("weight_map") or {}).values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if not names or missing:
            raise MhsaError(f"{folder / SHARD_INDEX} names missing shards: {', '.join(missing) or 'none listed'}")
        return [folder / n for n in names]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise MhsaError(f"{folder} has pickle weights ({pickles[0]}), which mhsa never opens; save them as "
                        "safetensors first: model.save_pretrained(folder, safe_serialization=True)")
    raise MhsaError(f"{folder} has no weights (expected model.safetensors)")


def _tokenizer(folder: Path) -> dict[str, Any] | None:
    path = folder / "tokenizer.json"
    return _read_json(path, "tokenizer.json") if path.is_file() else None


def read_folder(path: str | Path) -> HFFolder:
    """Check a Hugging Face folder and read its config and tokenizer (weights are read later).

    Raises:
        MhsaError: not a folder, no config.json, pickle-only or no weights.
    """
    folder = Path(path)
    if not str(path) or not folder.is_dir():
        raise MhsaError(f"{folder} is not a folder (expected a Hugging Face model folder)")
    if not (folder / "config.json").is_file():
        raise MhsaError(f"{folder} has no config.json (expected a Hugging Face model folder)")
    config = _read_json(folder / "config.json", "config.json")
    if not isinstance(config, dict):
        raise MhsaError(f"{folder / 'config.json'} is not a JSON object")
    return HFFolder(folder, config, _weight_files(folder), _tokenizer(folder))


def load_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of the safetensors ``files`` as float32 (CPU).

    Raises:
        MhsaError: a corrupt file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            loaded = load_file(str(f))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise MhsaError(f"{f} is not a readable safetensors file ({str(exc).splitlines()[0]})") from None
        tensors.update({k: v.float() if v.is_floating_point() else v for k, v in loaded.items()})
    return tensors


def sentence_transformers_extras(folder: Path) -> list[str]:
    """The sentence-transformers files and module folders (``1_Pooling``, ...) in ``folder``."""
    found = [n for n in SENTENCE_TRANSFORMERS if (folder / n).is_file()]
    if found:
        found += sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[:1].isdigit() and "_" in p.name)
    return found


# --------------------------------------------------------------------------- mapping

def _sources(fam: Family, n_layers: int, tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """mhsa module -> HF module actually present in ``tensors`` (prefix or none)."""
    prefix = fam.prefix if any(k.startswith(fam.prefix) for k in tensors) else ""
    table: dict[str, str] = {}
    for ours, theirs in fam.table.items():
        for i in range(n_layers) if "{i}" in ours else [None]:
            table[ours.format(i=i)] = prefix + theirs.format(i=i)
    heads = dict(fam.head_table)
    if fam.base_pooler and not any(k.startswith(heads["pooler"]) for k in tensors):
        heads["pooler"] = prefix + fam.base_pooler  # a base model's own pooler
    table.update(heads)
    return table


def plan_weights(mcfg: ModelConfig, fam: Family, tensors: dict[str, torch.Tensor],
                 keep_head: bool) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Which HF tensor fills each mhsa parameter, every one checked against ``mcfg`` before a model is
    built (shapes from a meta-device state dict: no memory): shape, floating point, finite.

    Args:
        keep_head: copy the classifier ``head`` too (else it stays as initialised).

    Returns:
        (mhsa key -> tensor, fresh modules left as initialised, HF tensor names not used).

    Raises:
        MhsaError: a required tensor is missing, of the wrong shape or dtype, or holds NaN/Inf.
    """
    from ..checkpoint import expected_state

    expected = expected_state(mcfg)
    mapped, used, fresh = {}, set(), []
    for ours, theirs in _sources(fam, mcfg.n_layers, tensors).items():
        if ours == "head" and not keep_head:
            fresh.append(ours)
            continue
        for suffix in (".weight", ".bias") if ours != "pos" else ("",):
            key, src = ours + suffix, theirs + (suffix or ".weight")
            if key not in expected:
                continue  # e.g. no token types in this config
            if src not in tensors:
                if ours in ("pooler", "head"):
                    fresh.append(ours)
                    break
                raise MhsaError(f"weights lack tensor '{src}' (needed for {key})")
            mapped[key] = _checked(src, tensors[src], ours == "pos", tuple(expected[key].shape))
            used.add(src)
    return mapped, sorted(set(fresh)), sorted(set(tensors) - used)


def _checked(src: str, t: torch.Tensor, pos: bool, want: tuple[int, ...]) -> torch.Tensor:
    """HF tensor ``src`` as the mhsa parameter of shape ``want`` (pos: (1, P, D)), or a one-line refusal."""
    from ..checkpoint import check_finite

    got = tuple(t.shape)
    if ((1, *got) if pos else got) != want:
        raise MhsaError(f"tensor '{src}' has shape {got}, but config.json implies {want[1:] if pos else want}")
    if not t.is_floating_point():
        raise MhsaError(f"tensor '{src}' is {t.dtype}, expected floating point")
    check_finite({f"'{src}'": t})
    return t.unsqueeze(0) if pos else t


def _check_tokenizer(tok: dict[str, Any] | None, mcfg: ModelConfig) -> None:
    """The tokenizer's ids must fit the embedding (fewer tokens than rows is common: vocabularies
    padded to a multiple of 8), and its padding id, if it sets one, must be the model's."""
    if tok is None:
        return
    from ..tasks.hf_text import make_tokenizer

    t = make_tokenizer(tok, 8)
    vocab = t.get_vocab(with_added_tokens=True)  # token -> id; ids need not be dense
    n = len(vocab)
    if n > mcfg.vocab_size:
        raise MhsaError(f"tokenizer.json has {n} tokens but the embedding has {mcfg.vocab_size} rows "
                        "(tokenizer and model do not belong together)")
    token, top = max(vocab.items(), key=lambda kv: kv[1], default=("", 0))
    if top >= mcfg.vocab_size:
        raise MhsaError(f"tokenizer.json gives token {token!r} id {top}, but the embedding has {mcfg.vocab_size} "
                        "rows (tokenizer and model do not belong together)")
    pad = (tok.get("padding") or {}).get("pad_id")
    if pad is not None and pad != mcfg.pad_id:
        raise MhsaError(f"tokenizer.json pads with id {pad} but config.json's pad_token_id is {mcfg.pad_id}")


# --------------------------------------------------------------------------- the stage

def _task(cfg: ImportConfig, folder: HFFolder, own_labels: list[str], max_len: int, pad_id: int) -> Any:
    """(task data or None, task spec, labels) for the checkpoint."""
    from ..tasks import hf_text

    if cfg.data:
        data = hf_text.build(cfg.seed, folder.tokenizer, pad_id, own_labels, max_positions=max_len,
                             **{**cfg.task_options, "path": cfg.data})  # max_len: auto from the data
        if data.max_len > max_len:
            raise MhsaError(f"max_len {data.max_len} exceeds the model's {max_len} positions")
        return data, data.spec, data.labels
    if cfg.task_options:
        raise MhsaError("--task-opt needs --data")
    labels = own_labels
    if cfg.labels:
        labels = list(cfg.labels)
    elif cfg.num_labels and cfg.num_labels != len(own_labels):
        labels = [str(i) for i in range(cfg.num_labels)]
    return None, hf_text.data_spec(folder.tokenizer, pad_id, labels, min(128, max_len)), labels


def _own_labels(cfg: ImportConfig, hf: dict[str, Any], is_classifier: bool) -> list[str]:
    """The classifier's class names: config.json's id2label, renamed by --labels of the same length."""
    own = labels_of(hf)
    if is_classifier and cfg.labels and len(cfg.labels) == len(own):
        return list(cfg.labels)  # e.g. LABEL_0, LABEL_1 -> neg, pos (to match a data file)
    return own


def import_hf(cfg: ImportConfig, progress: Progress = NULL) -> ImportResult:
    """Import a Hugging Face BERT / RoBERTa / DistilBERT folder as an mhsa checkpoint.

    Args:
        cfg: the folder, labels or data, seed and output.
        progress: progress sink.

    Returns:
        An :class:`ImportResult`; the checkpoint is written to ``cfg.out``.

    Raises:
        MhsaError: an existing output, a folder without config.json or weights,
            pickle weights, an unsupported architecture, a tokenizer that does not
            fit the embedding, or a tensor of the wrong shape. Nothing is written then.
    """
    check_output_dir(cfg.out, cfg.force, inputs=[cfg.path, cfg.data])  # --out must not hold what is read
    folder = read_folder(cfg.path)
    fam, is_classifier = family_of(folder.config)
    arch = fam.classifier if is_classifier else fam.base
    own = _own_labels(cfg, folder.config, is_classifier)
    fields = fam.config(folder.config)
    _check_tokenizer(folder.tokenizer, ModelConfig("tokens", **{**fields, "num_classes": 2}).validate())
    data, spec, labels = _task(cfg, folder, own, fields["max_len"], fields["pad_id"])
    keep_head = is_classifier and labels == own
    mcfg = ModelConfig("tokens", num_classes=len(labels), **fields).validate()
    with progress.task("import: reading weights", total=len(folder.weight_files)) as bar:
        tensors = load_weights(folder.weight_files)
        bar.advance(len(folder.weight_files))
    mapped, fresh, ignored = plan_weights(mcfg, fam, tensors, keep_head)  # every tensor checked first
    model = build_model(mcfg, seed=cfg.seed)
    model.load_state_dict({**model.state_dict(), **mapped}, strict=True)
    model.eval()
    metrics: dict[str, Any] = {"params": count_parameters(model)}
    with progress.task("import: checking against transformers", total=1) as bar:
        x = hf_check.sample_rows(model, folder.tokenizer, data)
        metrics.update(hf_check.compare(model, str(folder.path), x, logits=keep_head, fresh=fresh))
        bar.advance(1)
    if data is not None:
        from ..train import evaluate

        metrics.update(val_acc=evaluate(model, data.val, torch.device("cpu")),
                       test_acc=evaluate(model, data.test, torch.device("cpu")))
    notes = [f"fresh {m} (seed {cfg.seed}): fine-tune before use" for m in fresh]
    if extras := sentence_transformers_extras(folder.path):
        notes.append(f"sentence-transformers files ignored ({', '.join(extras)}): mhsa pools the first token "
                     "([CLS]) through the model's pooler; fine-tune before use")
    if gap_note := hf_check.note(metrics):
        notes.append(gap_note)
    if folder.tokenizer is None:
        notes.append("no tokenizer.json: the checkpoint has no tokenizer (needed by --data and train --init)")
    elif not folder.tokenizer.get("post_processor"):
        notes.append("tokenizer.json adds no special tokens, but the model pools the first token, "
                     "which BERT-family models expect to be [CLS] / <s>")
    source = {"folder": str(folder.path.resolve()), "architecture": arch, "model_type": fam.model_type,
              "weights": [f.name for f in folder.weight_files], "fresh": fresh, "ignored_tensors": ignored}
    meta = make_meta("float", mcfg, spec, "import", to_dict(cfg), metrics, extra={"source": source})
    save_model(cfg.out, model, meta, force=cfg.force)
    return ImportResult(cfg.out, arch, mcfg.to_dict(), labels, fresh, ignored, metrics, notes)
