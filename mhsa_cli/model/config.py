"""The model's configuration: :class:`ModelConfig`, :func:`make_config` and the named choices
(poolings, norms, activations, poolers) it is validated against."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import MhsaError

# cls: a learned token prepended to the input; first: the input's own first token
# (BERT's [CLS] added by its tokenizer); mean / max: average / maximum over real tokens;
# meanmax: their sum (the text task's default: the strongest cue anywhere in the text)
POOLINGS = ("cls", "first", "mean", "max", "meanmax")
FIRST_POSITION = ("cls", "first")  # poolings that read row 0 only
NORMS = ("pre", "post")  # pre-LN: x + f(ln(x)); post-LN (BERT): ln(x + f(x))
ACTIVATIONS = {  # feed-forward non-linearity; HF names gelu / gelu_new map to these
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "relu": F.relu,
}
POOLERS = {  # dense + activation on the pooled vector before the classifier (BERT, RoBERTa: tanh)
    "none": None,
    "tanh": torch.tanh,
    "relu": F.relu,  # DistilBERT's pre_classifier
}


@dataclass
class ModelConfig:
    """Architecture; stored in every checkpoint and enough to rebuild the model."""

    input_kind: str  # "tokens" | "features"
    max_len: int
    num_classes: int
    vocab_size: int = 0  # tokens only; id 0 is padding
    feature_dim: int = 0  # features only
    d_model: int = 64
    heads: list[int] = field(default_factory=lambda: [4, 4])  # per layer
    head_dim: int = 16
    # feed-forward width: an int (every layer; what unpruned models and older checkpoints hold) or
    # one int per layer after neuron pruning (0 = that layer's feed-forward adds only a bias); kept
    # canonical: a list whose entries are all equal becomes that int (see :meth:`ff_sizes`)
    d_ff: int | list[int] = 128
    dropout: float = 0.0
    pooling: str = "cls"
    # BERT-family switches; the defaults are the original mhsa model
    norm: str = "pre"  # "pre" | "post" LayerNorm blocks
    embed_norm: bool = False  # LayerNorm (+ dropout) after summing the embeddings
    final_norm: bool = True  # LayerNorm ln_f on the pooled vector (pre-LN blocks need it)
    type_vocab_size: int = 0  # >0: token-type embeddings; inputs are one segment (type 0)
    pos_offset: int = 0  # first position id (RoBERTa: padding_idx + 1 = 2)
    pad_id: int = 0  # padding token id (masked out of attention); RoBERTa: 1
    pooler: str = "none"  # dense + activation after pooling: none | tanh | relu
    activation: str = "gelu"  # feed-forward activation: gelu | gelu_tanh | relu
    ln_eps: float = 1e-5  # LayerNorm epsilon (BERT: 1e-12)

    STYLE = ("norm", "embed_norm", "final_norm", "type_vocab_size", "pos_offset", "pad_id",
             "pooler", "activation", "ln_eps", "pooling")  # kept by students and pruning

    def style(self) -> dict[str, Any]:
        """The architecture switches a student copies from its teacher."""
        return {k: getattr(self, k) for k in self.STYLE}

    def __post_init__(self) -> None:
        if isinstance(self.d_ff, (list, tuple)):
            sizes = [int(f) for f in self.d_ff]
            self.d_ff = sizes[0] if sizes and len(set(sizes)) == 1 and len(sizes) == len(self.heads) else sizes

    @property
    def n_layers(self) -> int:
        return len(self.heads)

    @property
    def ff_sizes(self) -> list[int]:
        """Feed-forward width of each layer (``d_ff`` as a per-layer list)."""
        return list(self.d_ff) if isinstance(self.d_ff, list) else [self.d_ff] * self.n_layers

    def validate(self) -> "ModelConfig":
        """Check the shape; raise :class:`MhsaError` with one line if it is unusable."""
        if self.n_layers < 1:
            raise MhsaError("model needs at least 1 layer")
        if any(h < 0 for h in self.heads):
            raise MhsaError(f"head counts must be >= 0, got {self.heads}")
        if min(self.d_model, self.head_dim, self.max_len, self.num_classes) < 1:
            raise MhsaError("d_model, head_dim, max_len and num_classes must be >= 1")
        if isinstance(self.d_ff, list) and len(self.d_ff) != self.n_layers:
            raise MhsaError(f"d_ff has {len(self.d_ff)} entries for {self.n_layers} layers")
        if any(f < 0 for f in self.ff_sizes):
            raise MhsaError(f"d_ff must be >= 0, got {self.d_ff}")
        if not 0.0 <= self.dropout < 1.0:
            raise MhsaError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, allowed in (("pooling", POOLINGS), ("norm", NORMS), ("activation", ACTIVATIONS),
                              ("pooler", POOLERS)):
            if getattr(self, name) not in allowed:
                raise MhsaError(f"unknown {name} '{getattr(self, name)}'; choose from: {', '.join(allowed)}")
        if min(self.type_vocab_size, self.pos_offset) < 0 or not self.ln_eps > 0:
            raise MhsaError("type_vocab_size and pos_offset must be >= 0 and ln_eps > 0")
        if self.input_kind == "tokens" and not 0 <= self.pad_id < max(self.vocab_size, 1):
            raise MhsaError(f"pad_id {self.pad_id} is outside the vocabulary (size {self.vocab_size})")
        if self.input_kind == "tokens" and self.vocab_size < 2:
            raise MhsaError("a token model needs vocab_size >= 2")
        if self.input_kind == "features" and self.feature_dim < 1:
            raise MhsaError("a feature model needs feature_dim >= 1")
        if self.input_kind not in ("tokens", "features"):
            raise MhsaError(f"unknown input kind '{self.input_kind}'")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise MhsaError(f"model config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**{**d, "heads": [int(h) for h in d.get("heads", [])]}).validate()


def make_config(task_input_kind: str, max_len: int, num_classes: int, vocab_size: int,
                feature_dim: int, layers: int, d_model: int, heads: int, d_ff: int,
                dropout: float, pooling: str) -> ModelConfig:
    """Config for a fresh model with ``heads`` heads in each of ``layers`` layers.

    Raises:
        MhsaError: zero layers, zero heads, or ``d_model`` not divisible by ``heads``.
    """
    if layers < 1:
        raise MhsaError(f"layers must be >= 1, got {layers}")
    if heads < 1 or d_model < 1 or d_model % heads:
        raise MhsaError(f"d_model ({d_model}) must be divisible by heads ({heads}), both >= 1")
    return ModelConfig(task_input_kind, max_len, num_classes, vocab_size, feature_dim, d_model,
                       [heads] * layers, d_model // heads, d_ff, dropout, pooling).validate()
