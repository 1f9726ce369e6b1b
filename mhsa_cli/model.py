"""The attention model: a pre-LN Transformer encoder classifier.

Design points that the compression stages rely on:

* Attention uses four plain ``nn.Linear`` projections (q, k, v, o), so dynamic
  int8 quantization covers all of them and heads can be sliced out.
* **Each layer has its own head count** (``ModelConfig.heads``); the head size
  ``head_dim`` is shared and stays fixed when heads are removed. A layer with
  zero heads is valid: its attention sub-layer adds only the output bias.
* The default forward uses ``F.scaled_dot_product_attention``. Per-head gates
  (for importance scores) and attention probabilities (for distillation) are
  opt-in through :meth:`MHSAClassifier.forward_features`.

Shapes: B batch, T tokens (incl. CLS when used), D d_model, H heads, S head_dim.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import MhsaError

POOLINGS = ("cls", "mean")


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
    d_ff: int = 128
    dropout: float = 0.0
    pooling: str = "cls"

    @property
    def n_layers(self) -> int:
        return len(self.heads)

    def validate(self) -> "ModelConfig":
        """Check the shape; raise :class:`MhsaError` with one line if it is unusable."""
        if self.n_layers < 1:
            raise MhsaError("model needs at least 1 layer")
        if any(h < 0 for h in self.heads):
            raise MhsaError(f"head counts must be >= 0, got {self.heads}")
        if min(self.d_model, self.head_dim, self.d_ff, self.max_len, self.num_classes) < 1:
            raise MhsaError("d_model, head_dim, d_ff, max_len and num_classes must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise MhsaError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in POOLINGS:
            raise MhsaError(f"unknown pooling '{self.pooling}'; choose from: {', '.join(POOLINGS)}")
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
        known = {f for f in cls.__dataclass_fields__}
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


@dataclass
class EncoderOutput:
    """What :meth:`MHSAClassifier.forward_features` returns."""

    logits: torch.Tensor  # (B, C)
    hidden_states: list[torch.Tensor]  # embeddings + each block's output, (B, T, D)
    attentions: list[torch.Tensor | None]  # per layer (B, H, T, T); None for 0-head layers
    pad_mask: torch.Tensor | None  # (B, T) True = real token


class Attention(nn.Module):
    """Multi-head self-attention with per-layer head count ``n_heads`` (may be 0)."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = n_heads, head_dim, dropout
        inner = n_heads * head_dim
        if n_heads > 0:
            self.q = nn.Linear(d_model, inner)
            self.k = nn.Linear(d_model, inner)
            self.v = nn.Linear(d_model, inner)
            self.o = nn.Linear(inner, d_model)
        else:  # all heads removed: only the output bias survives
            self.o_bias = nn.Parameter(torch.zeros(d_model))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, S)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                gate: torch.Tensor | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, D); attn_mask: (B, 1, 1, T) bool, True = attend; gate: (H,) or (B, H)."""
        if self.n_heads == 0:
            return self.o_bias.expand_as(x), None
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        p = self.dropout if self.training else 0.0
        probs = None
        if need_weights:  # explicit path: same math as SDPA, keeps the probabilities
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, T)
            empty = None
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
                # a query row with no key to attend (an all-padding sample): softmax of all -inf
                # is NaN; SDPA returns 0 for such rows, and so do we (no NaN, not even in backward)
                empty = ~attn_mask.any(dim=-1, keepdim=True)  # (B, 1, 1, 1)
                scores = scores.masked_fill(empty, 0.0)
            probs = scores.softmax(dim=-1)
            if empty is not None:
                probs = probs.masked_fill(empty, 0.0)
            y = F.dropout(probs, p, self.training) @ v  # (B, H, T, S)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        if gate is not None:  # (H,) for all samples or (B, H) per sample; 0 == head removed
            y = y * (gate.view(1, -1, 1, 1) if gate.dim() == 1 else gate[:, :, None, None])
        B, _, T, _ = y.shape
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*S)
        return self.o(y), probs


class Block(nn.Module):
    """Pre-LN block: x + attn(ln(x)), then x + ff(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, d_ff: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, head_dim, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, attn_mask=None, gate=None, need_weights=False):
        a, probs = self.attn(self.ln1(x), attn_mask, gate, need_weights)
        x = x + self.drop(a)
        x = x + self.drop(self.ff2(F.gelu(self.ff1(self.ln2(x)))))
        return x, probs


class MHSAClassifier(nn.Module):
    """Embedding (tokens) or linear projection (features) + blocks + pooling + classifier."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        c = config
        if c.input_kind == "tokens":
            self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=0)
        else:
            self.embed = nn.Linear(c.feature_dim, c.d_model)
        extra = 1 if c.pooling == "cls" else 0
        self.cls = nn.Parameter(torch.zeros(1, 1, c.d_model)) if extra else None
        self.pos = nn.Parameter(torch.zeros(1, c.max_len + extra, c.d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(
            Block(c.d_model, h, c.head_dim, c.d_ff, c.dropout) for h in c.heads
        )
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.num_classes)

    @property
    def heads(self) -> list[int]:
        """Current per-layer head counts (kept in sync with ``config.heads``)."""
        return [b.attn.n_heads for b in self.blocks]

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T) ids or (B, T, F) -> (B, T', D) and pad mask (B, T') or None."""
        pad = (x != 0) if self.config.input_kind == "tokens" else None  # (B, T)
        h = self.embed(x)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
            if pad is not None:
                pad = torch.cat([pad.new_ones(pad.shape[0], 1), pad], dim=1)
        if h.shape[1] > self.pos.shape[1]:
            raise MhsaError(f"input length {x.shape[1]} exceeds the model's max_len {self.config.max_len}")
        return h + self.pos[:, : h.shape[1]], pad

    def _pool(self, h: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        if self.config.pooling == "cls":
            return h[:, 0]
        if pad is None:
            return h.mean(dim=1)
        w = pad.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1.0)

    def forward_features(self, x: torch.Tensor, head_gates: list[torch.Tensor] | None = None,
                         output_attentions: bool = False) -> EncoderOutput:
        """Full forward with hidden states, optional gates (one (H_l,) tensor per layer)
        and optional attention probabilities."""
        h, pad = self._embed(x)
        attn_mask = pad[:, None, None, :] if pad is not None else None  # (B, 1, 1, T)
        hidden, attns = [h], []
        for i, block in enumerate(self.blocks):
            gate = head_gates[i] if head_gates is not None else None
            h, probs = block(h, attn_mask, gate, output_attentions)
            hidden.append(h)
            attns.append(probs)
        logits = self.head(self.ln_f(self._pool(h, pad)))
        return EncoderOutput(logits, hidden, attns, pad)

    def forward(self, x: torch.Tensor, features: bool = False,
                head_gates: list[torch.Tensor] | None = None,
                output_attentions: bool = False) -> torch.Tensor | EncoderOutput:
        """Logits (B, C): the fast path used for training, evaluation and latency.

        With ``features=True`` returns :meth:`forward_features`'s
        :class:`EncoderOutput` instead (so a DDP-wrapped model can give hidden
        states and attentions through its own ``forward``).
        """
        if features:
            return self.forward_features(x, head_gates, output_attentions)
        h, pad = self._embed(x)
        attn_mask = pad[:, None, None, :] if pad is not None else None
        for block in self.blocks:
            h, _ = block(h, attn_mask)
        return self.head(self.ln_f(self._pool(h, pad)))


def build_model(config: ModelConfig, seed: int | None = None) -> MHSAClassifier:
    """Create a model; with ``seed`` the initial weights are deterministic."""
    if seed is not None:
        torch.manual_seed(seed)
    return MHSAClassifier(config)


def count_parameters(model: nn.Module) -> int:
    """Number of float parameters (quantized packed weights are counted by quantize.py)."""
    return sum(p.numel() for p in model.parameters())


def attention_flops(config: ModelConfig, seq_len: int | None = None) -> int:
    """Multiply-accumulates x2 of one forward pass for one sample (matmuls only).

    Used to explain speedups after pruning: q/k/v/o projections, scores and
    weighted values per layer, feed-forward, classifier.
    """
    c = config
    T = (seq_len or c.max_len) + (1 if c.pooling == "cls" else 0)
    embed = T * c.feature_dim * c.d_model if c.input_kind == "features" else 0
    total = embed
    for h in c.heads:
        inner = h * c.head_dim
        total += 4 * T * c.d_model * inner  # q, k, v, o
        total += 2 * T * T * inner  # scores + probs @ v
        total += 2 * T * c.d_model * c.d_ff  # ff1 + ff2
    total += c.d_model * c.num_classes
    return 2 * total
