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

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import MhsaError

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


def _activation(name: Any) -> str:
    if name not in ACTIVATIONS:
        raise MhsaError(f"unsupported activation '{name}' in config.json; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _bert_like(cfg: dict[str, Any], pos_offset: int) -> dict[str, Any]:
    """BERT and RoBERTa: post-LN, embedding LayerNorm, token types, tanh pooler."""
    kind = cfg.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise MhsaError(f"position_embedding_type '{kind}' is not supported (only absolute)")
    d, heads = int(_get(cfg, "hidden_size")), int(_get(cfg, "num_attention_heads"))
    if d % heads:
        raise MhsaError(f"hidden_size {d} is not divisible by num_attention_heads {heads}")
    pad = int(_get(cfg, "pad_token_id", 0))
    return dict(
        vocab_size=int(_get(cfg, "vocab_size")), d_model=d, heads=[heads] * int(_get(cfg, "num_hidden_layers")),
        head_dim=d // heads, d_ff=int(_get(cfg, "intermediate_size")),
        dropout=float(_get(cfg, "hidden_dropout_prob", 0.1)), pooling="first", norm="post",
        embed_norm=True, final_norm=False, type_vocab_size=int(_get(cfg, "type_vocab_size", 2)),
        pos_offset=pos_offset(pad), pad_id=pad, pooler="tanh",
        activation=_activation(_get(cfg, "hidden_act", "gelu")),
        ln_eps=float(_get(cfg, "layer_norm_eps", 1e-12)),
        max_len=int(_get(cfg, "max_position_embeddings")) - pos_offset(pad),
    )


def _distilbert(cfg: dict[str, Any]) -> dict[str, Any]:
    """DistilBERT: post-LN, embedding LayerNorm (eps 1e-12), no token types, ReLU pre-classifier."""
    d, heads = int(_get(cfg, "dim")), int(_get(cfg, "n_heads"))
    if d % heads:
        raise MhsaError(f"dim {d} is not divisible by n_heads {heads}")
    return dict(
        vocab_size=int(_get(cfg, "vocab_size")), d_model=d, heads=[heads] * int(_get(cfg, "n_layers")),
        head_dim=d // heads, d_ff=int(_get(cfg, "hidden_dim")), dropout=float(_get(cfg, "dropout", 0.1)),
        pooling="first", norm="post", embed_norm=True, final_norm=False, type_vocab_size=0, pos_offset=0,
        pad_id=int(_get(cfg, "pad_token_id", 0)), pooler="relu",
        activation=_activation(_get(cfg, "activation", "gelu")), ln_eps=1e-12,
        max_len=int(_get(cfg, "max_position_embeddings")),
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
    arch = archs[0] if archs else None
    fam = FAMILIES.get(str(cfg.get("model_type")))
    if fam is None or (arch is not None and arch not in fam.architectures):
        shown = arch or f"model_type '{cfg.get('model_type')}'"
        raise MhsaError(f"unsupported architecture {shown}; supported: {', '.join(supported())}")
    return fam, arch == fam.classifier
