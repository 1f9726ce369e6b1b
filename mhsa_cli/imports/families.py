"""One mapping table per Hugging Face family (as litgpt's ``convert_hf_checkpoint``).

A :class:`Family` says which ``config.json`` it reads (``model_type``), which
architectures it accepts, how its config becomes the :class:`ModelConfig`
switches, and where each mhsa tensor comes from (:attr:`Family.table`: mhsa
module -> HF module, ``{i}`` = layer index; ``.weight`` / ``.bias`` are
appended to both). HF keys are given without the base-model prefix
(``bert.``, ``roberta.``, ``distilbert.``); the classifier keys of the
``...ForSequenceClassification`` models sit outside that prefix and are
listed in :attr:`Family.head_table`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import MhsaError, cap

# HF hidden_act -> ModelConfig.activation
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}

_BERT_LAYER = {
    "blocks.{i}.attn.q": "encoder.layer.{i}.attention.self.query",
    "blocks.{i}.attn.k": "encoder.layer.{i}.attention.self.key",
    "blocks.{i}.attn.v": "encoder.layer.{i}.attention.self.value",
    "blocks.{i}.attn.o": "encoder.layer.{i}.attention.output.dense",
    "blocks.{i}.ln1": "encoder.layer.{i}.attention.output.LayerNorm",
    "blocks.{i}.ff1": "encoder.layer.{i}.intermediate.dense",
    "blocks.{i}.ff2": "encoder.layer.{i}.output.dense",
    "blocks.{i}.ln2": "encoder.layer.{i}.output.LayerNorm",
}
_BERT_EMBED = {
    "embed": "embeddings.word_embeddings",
    "pos": "embeddings.position_embeddings",
    "type_embed": "embeddings.token_type_embeddings",
    "embed_ln": "embeddings.LayerNorm",
}


@dataclass(frozen=True)
class Family:
    """How one HF model family maps onto :class:`mhsa_cli.model.ModelConfig`."""

    model_type: str  # config.json "model_type"
    prefix: str  # base-model prefix inside ...ForSequenceClassification checkpoints
    classifier: str  # the ...ForSequenceClassification architecture
    base: str  # the base-model architecture (gets a fresh classifier)
    config: Callable[[dict[str, Any]], dict[str, Any]]  # config.json -> ModelConfig fields
    table: dict[str, str]  # mhsa module -> HF module (base model)
    head_table: dict[str, str] = field(default_factory=dict)  # classifier modules (no prefix)
    base_pooler: str | None = None  # HF pooler module of the base model, if it has one
    also_base: tuple[str, ...] = ()  # pre-training checkpoints: their LM heads are ignored

    @property
    def architectures(self) -> tuple[str, ...]:
        return (self.classifier, self.base, *self.also_base)


def _get(cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    """A config.json value; a missing required one is a one-line error."""
    if cfg.get(key) is not None:
        return cfg[key]
    if default is None:
        raise MhsaError(f"config.json has no '{key}'")
    return default


def _shown(value: Any) -> str:
    return cap(json.dumps(value, default=str), 40)


def _int(cfg: dict[str, Any], key: str, default: int | None = None, minimum: int = 1) -> int:
    """An integer config.json value >= ``minimum`` (sizes, counts, ids); 12.0, "12" and true are refused."""
    value = _get(cfg, key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MhsaError(f"config.json '{key}' must be an integer, got {_shown(value)}")
    if value < minimum:
        raise MhsaError(f"config.json '{key}' must be >= {minimum}, got {value}")
    return value


def _float(cfg: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    """A number in [low, high) from config.json (dropout, LayerNorm epsilon)."""
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
        raise MhsaError(f"config.json '{key}' must be a number in [{low:g}, {high:g}), got {_shown(value)}")
    return float(value)


def _activation(name: Any) -> str:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise MhsaError(f"unsupported activation {_shown(name)} in config.json; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _heads(cfg: dict[str, Any], d_key: str, h_key: str, layers_key: str) -> tuple[int, int, list[int]]:
    """(hidden size, head size, heads per layer); the heads must divide the hidden size."""
    d, heads = _int(cfg, d_key), _int(cfg, h_key)
    if d % heads:
        raise MhsaError(f"config.json '{d_key}' {d} is not divisible by '{h_key}' {heads}")
    return d, d // heads, [heads] * _int(cfg, layers_key)


def _positions(cfg: dict[str, Any], offset: int) -> int:
    """Usable positions: max_position_embeddings less RoBERTa's offset."""
    total = _int(cfg, "max_position_embeddings")
    if total - offset < 1:
        raise MhsaError(f"config.json 'max_position_embeddings' {total} leaves no position after the offset {offset}")
    return total - offset


def _pad(cfg: dict[str, Any], vocab: int) -> int:
    pad = _int(cfg, "pad_token_id", 0, minimum=0)
    if pad >= vocab:
        raise MhsaError(f"config.json 'pad_token_id' {pad} is outside the vocabulary ('vocab_size' {vocab})")
    return pad


def _bert_like(cfg: dict[str, Any], pos_offset: Callable[[int], int]) -> dict[str, Any]:
    """BERT and RoBERTa: post-LN, embedding LayerNorm, token types, tanh pooler."""
    kind = cfg.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise MhsaError(f"position_embedding_type {_shown(kind)} is not supported (only absolute)")
    d, head_dim, heads = _heads(cfg, "hidden_size", "num_attention_heads", "num_hidden_layers")
    vocab = _int(cfg, "vocab_size", minimum=2)
    pad = _pad(cfg, vocab)
    return dict(
        vocab_size=vocab, d_model=d, heads=heads, head_dim=head_dim, d_ff=_int(cfg, "intermediate_size"),
        dropout=_float(cfg, "hidden_dropout_prob", 0.1, 0, 1), pooling="first", norm="post",
        embed_norm=True, final_norm=False, type_vocab_size=_int(cfg, "type_vocab_size", 2, minimum=0),
        pos_offset=pos_offset(pad), pad_id=pad, pooler="tanh",
        activation=_activation(_get(cfg, "hidden_act", "gelu")),
        ln_eps=_float(cfg, "layer_norm_eps", 1e-12, 1e-30, 1), max_len=_positions(cfg, pos_offset(pad)),
    )


def _distilbert(cfg: dict[str, Any]) -> dict[str, Any]:
    """DistilBERT: post-LN, embedding LayerNorm (eps 1e-12), no token types, ReLU pre-classifier."""
    d, head_dim, heads = _heads(cfg, "dim", "n_heads", "n_layers")
    vocab = _int(cfg, "vocab_size", minimum=2)
    return dict(
        vocab_size=vocab, d_model=d, heads=heads, head_dim=head_dim, d_ff=_int(cfg, "hidden_dim"),
        dropout=_float(cfg, "dropout", 0.1, 0, 1), pooling="first", norm="post", embed_norm=True,
        final_norm=False, type_vocab_size=0, pos_offset=0, pad_id=_pad(cfg, vocab), pooler="relu",
        activation=_activation(_get(cfg, "activation", "gelu")), ln_eps=1e-12, max_len=_positions(cfg, 0),
    )


FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert", "bert.", "BertForSequenceClassification", "BertModel",
        lambda c: _bert_like(c, lambda pad: 0), {**_BERT_EMBED, **_BERT_LAYER},
        head_table={"pooler": "bert.pooler.dense", "head": "classifier"}, base_pooler="pooler.dense",
        also_base=("BertForMaskedLM", "BertForPreTraining")),
    "roberta": Family(  # positions start after the padding index: padding_idx + 1
        "roberta", "roberta.", "RobertaForSequenceClassification", "RobertaModel",
        lambda c: _bert_like(c, lambda pad: pad + 1), {**_BERT_EMBED, **_BERT_LAYER},
        head_table={"pooler": "classifier.dense", "head": "classifier.out_proj"}, base_pooler="pooler.dense",
        also_base=("RobertaForMaskedLM",)),
    "distilbert": Family(
        "distilbert", "distilbert.", "DistilBertForSequenceClassification", "DistilBertModel",
        _distilbert, {
            "embed": "embeddings.word_embeddings",
            "pos": "embeddings.position_embeddings",
            "embed_ln": "embeddings.LayerNorm",
            "blocks.{i}.attn.q": "transformer.layer.{i}.attention.q_lin",
            "blocks.{i}.attn.k": "transformer.layer.{i}.attention.k_lin",
            "blocks.{i}.attn.v": "transformer.layer.{i}.attention.v_lin",
            "blocks.{i}.attn.o": "transformer.layer.{i}.attention.out_lin",
            "blocks.{i}.ln1": "transformer.layer.{i}.sa_layer_norm",
            "blocks.{i}.ff1": "transformer.layer.{i}.ffn.lin1",
            "blocks.{i}.ff2": "transformer.layer.{i}.ffn.lin2",
            "blocks.{i}.ln2": "transformer.layer.{i}.output_layer_norm",
        },
        head_table={"pooler": "pre_classifier", "head": "classifier"}, also_base=("DistilBertForMaskedLM",)),
}


def supported() -> list[str]:
    """Every architecture name ``mhsa import`` accepts."""
    return [a for f in FAMILIES.values() for a in f.architectures]


def family_of(cfg: dict[str, Any]) -> tuple[Family, bool]:
    """The family of a config.json and whether it is the classifier architecture.

    Raises:
        MhsaError: an architecture outside :func:`supported` (named in the message).
    """
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise MhsaError(f"config.json 'architectures' must be a list of names, got {_shown(archs)}")
    arch = archs[0] if archs else None
    fam = FAMILIES.get(str(cfg.get("model_type")))
    if fam is None or (arch is not None and arch not in fam.architectures):
        shown = arch or f"model_type '{cfg.get('model_type')}'"
        raise MhsaError(f"unsupported architecture {shown}; supported: {', '.join(supported())}")
    return fam, arch == fam.classifier


def labels_of(cfg: dict[str, Any]) -> list[str]:
    """The model's own class names: config.json's ``id2label`` (ids 0..N-1, names distinct), else
    ``LABEL_0 .. LABEL_{num_labels - 1}``.

    Raises:
        MhsaError: id2label not a mapping of the ids 0..N-1 to names, repeated names, a bad num_labels.
    """
    from ..labels import check_labels

    id2label = cfg.get("id2label") or {}
    if not id2label:
        return [f"LABEL_{i}" for i in range(_int(cfg, "num_labels", 2))]
    if not isinstance(id2label, dict):
        raise MhsaError(f"config.json 'id2label' must map class ids to names, got {_shown(id2label)}")
    ids = {k: int(k) for k in id2label if str(k).isdigit()}
    if sorted(ids.values()) != list(range(len(id2label))):
        raise MhsaError(f"config.json 'id2label' keys must be the class ids 0..{len(id2label) - 1}, "
                        f"got {_shown(list(id2label))}")
    names = [id2label[k] for k in sorted(ids, key=ids.get)]
    return check_labels([str(n) if isinstance(n, int) and not isinstance(n, bool) else n for n in names],
                        "config.json 'id2label'")
