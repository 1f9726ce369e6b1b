"""The model's modules: attention, blocks and the classifier (see :mod:`mhsa_cli.model`).

Shapes: B batch, T tokens (incl. CLS when used), D d_model, H heads, S head_dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MhsaError
from .config import ACTIVATIONS, FIRST_POSITION, POOLERS, ModelConfig

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
                gate: torch.Tensor | None = None, need_weights: bool = False,
                query: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, D) keys and values (and queries unless ``query``: (B, Q, D), the rows whose
        outputs are wanted); attn_mask: (B, 1, 1, T) bool, True = attend; gate: (H,) or (B, H).
        Returns (B, Q, D) (Q = T without ``query``) and the probabilities (B, H, Q, T) or None."""
        query = x if query is None else query
        if self.n_heads == 0:
            return self.o_bias.expand_as(query), None
        q, k, v = self._heads(self.q(query)), self._heads(self.k(x)), self._heads(self.v(x))
        p = self.dropout if self.training else 0.0
        probs = None
        if need_weights:  # explicit path: same math as SDPA, keeps the probabilities
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, Q, T)
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
            y = F.dropout(probs, p, self.training) @ v  # (B, H, Q, S)
        else:
            # the scale given (torch's default value, bitwise the same): the ONNX graph gets a
            # constant instead of 6 nodes that compute it from the runtime shape
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p,
                                               scale=1 / math.sqrt(self.head_dim))
        if gate is not None:  # (H,) for all samples or (B, H) per sample; 0 == head removed
            y = y * (gate.view(1, -1, 1, 1) if gate.dim() == 1 else gate[:, :, None, None])
        B, _, Q, _ = y.shape
        y = y.transpose(1, 2).reshape(B, Q, self.n_heads * self.head_dim)  # (B, Q, H*S)
        return self.o(y), probs


class Block(nn.Module):
    """Pre-LN block: x + attn(ln1(x)), then x + ff(ln2(x)); post-LN (BERT): ln1(x + attn(x)),
    then ln2(x + ff(x))."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, d_ff: int, dropout: float,
                 norm: str = "pre", activation: str = "gelu", ln_eps: float = 1e-5):
        super().__init__()
        self.post = norm == "post"
        self.act = ACTIVATIONS[activation]
        self.ln1 = nn.LayerNorm(d_model, eps=ln_eps)
        self.attn = Attention(d_model, n_heads, head_dim, dropout)
        self.ln2 = nn.LayerNorm(d_model, eps=ln_eps)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.ff2(self.act(self.ff1(x))))  # (B, T, D)

    def forward(self, x, attn_mask=None, gate=None, need_weights=False, first_only=False):
        """x: (B, T, D) -> (B, T, D), or (B, 1, D) with ``first_only``: the first position's
        output alone (every row still serves as key and value), the same numbers as row 0
        of the full output for a fraction of the work (see :meth:`MHSAClassifier.forward`)."""
        # contiguous: F.linear on a strided (B, 1, D) view rounds differently with the weights'
        # memory alignment (measured: 4 results over 16 offsets), i.e. from one load to the next
        if self.post:
            q = x[:, :1].contiguous() if first_only else None
            a, probs = self.attn(x, attn_mask, gate, need_weights, q)
            x = self.ln1((x if q is None else q) + self.drop(a))
            return self.ln2(x + self._ff(x)), probs
        hx = self.ln1(x)
        a, probs = self.attn(hx, attn_mask, gate, need_weights, hx[:, :1].contiguous() if first_only else None)
        x = (x[:, :1] if first_only else x) + self.drop(a)
        return x + self._ff(self.ln2(x)), probs


class MHSAClassifier(nn.Module):
    """Embedding (tokens) or linear projection (features) + blocks + pooling + classifier."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        c = config
        if c.input_kind == "tokens":
            self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        else:
            self.embed = nn.Linear(c.feature_dim, c.d_model)
        extra = 1 if c.pooling == "cls" else 0
        self.cls = nn.Parameter(torch.zeros(1, 1, c.d_model)) if extra else None
        # rows [pos_offset, pos_offset + T) are used; RoBERTa keeps its unused first rows
        self.pos = nn.Parameter(torch.zeros(1, c.pos_offset + c.max_len + extra, c.d_model))
        nn.init.normal_(self.pos, std=0.02)
        if c.type_vocab_size:  # one segment: row 0 is added to every token
            self.type_embed = nn.Embedding(c.type_vocab_size, c.d_model)
        if c.embed_norm:
            self.embed_ln = nn.LayerNorm(c.d_model, eps=c.ln_eps)
            self.embed_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(c.d_model, h, c.head_dim, c.d_ff, c.dropout, c.norm, c.activation, c.ln_eps)
            for h in c.heads
        )
        self.ln_f = nn.LayerNorm(c.d_model, eps=c.ln_eps) if c.final_norm else nn.Identity()
        if POOLERS[c.pooler] is not None:
            self.pooler = nn.Linear(c.d_model, c.d_model)
            self.pooler_drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.d_model, c.num_classes)
        self.drop = nn.Dropout(c.dropout)  # on the embeddings, as in BERT (no weights)

    @property
    def heads(self) -> list[int]:
        """Current per-layer head counts (kept in sync with ``config.heads``)."""
        return [b.attn.n_heads for b in self.blocks]

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T) ids or (B, T, F) -> (B, T', D) and pad mask (B, T') or None."""
        h, pad = self._tokens(x)
        return self._add_positions(h), pad

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x -> token (or feature) embeddings with the cls row first (B, T', D), pad mask (B, T')."""
        c = self.config
        # (B, T'): with cls, id -1 (never the pad id) stands for the cls row; one Pad in the ONNX
        # graph where concatenating a ones column took six nodes
        ids = F.pad(x, (1, 0), value=-1) if self.cls is not None and c.input_kind == "tokens" else x
        pad = (ids != c.pad_id) if c.input_kind == "tokens" else None
        h = self.embed(x)
        if self.cls is not None:
            h = torch.cat([self.cls.expand_as(h[:, :1]), h], dim=1)
        return h, pad

    def _add_positions(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, D) + its position rows + segment 0, then the embedding norm / dropout."""
        c = self.config
        T = h.shape[1]
        if c.pos_offset + T > self.pos.shape[1]:
            raise MhsaError(f"input length {T - (self.cls is not None)} exceeds the model's max_len {c.max_len}")
        # right padding: RoBERTa's positions
        h = h + self.pos[:, c.pos_offset: c.pos_offset + T]
        if c.type_vocab_size:
            h = h + self.type_embed.weight[0]
        if c.embed_norm:
            return self.embed_drop(self.embed_ln(h))
        return self.drop(h)  # our own models: dropout on the embeddings too (no weights; p = 0 is a no-op)

    def _pool(self, h: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D) -> (B, D): the first position (cls, first), or the mean / max / mean + max
        over real tokens (padding excluded, so the result does not depend on padding)."""
        kind = self.config.pooling
        if kind in FIRST_POSITION:
            return h[:, 0]
        out = 0
        if kind in ("mean", "meanmax"):
            if pad is None:
                out = h.mean(dim=1)
            else:
                w = pad.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
                out = (h * w).sum(1) / w.sum(1).clamp(min=1.0)
        if kind in ("max", "meanmax"):  # the strongest feature anywhere in the text
            masked = h if pad is None else h.masked_fill(~pad.unsqueeze(-1), float("-inf"))
            out = out + masked.amax(dim=1)
        return out

    def _classify(self, h: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """Last hidden states (B, T, D) -> logits (B, C): pool, final norm, pooler, classifier."""
        z = self.ln_f(self._pool(h, pad))  # (B, D)
        act = POOLERS[self.config.pooler]
        if act is not None:
            z = self.pooler_drop(act(self.pooler(z)))
        return self.head(z)

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
        return EncoderOutput(self._classify(h, pad), hidden, attns, pad)

    def forward(self, x: torch.Tensor, features: bool = False,
                head_gates: list[torch.Tensor] | None = None,
                output_attentions: bool = False) -> torch.Tensor | EncoderOutput:
        """Logits (B, C): the fast path used for training, evaluation and latency.

        In eval mode a first-position pooling (``cls``, ``first``) reads row 0 of
        the last block alone, so that block computes only that row: queries,
        attention, output projection and feed-forward for 1 position instead of
        T (keys and values still for all T). Exact (the same formula; float
        rounding may differ in the last bits); the exported ONNX graph has it
        too. Training keeps the full last block (bitwise the same training runs).

        With ``features=True`` returns :meth:`forward_features`'s
        :class:`EncoderOutput` instead (so a DDP-wrapped model can give hidden
        states and attentions through its own ``forward``).
        """
        if features:
            return self.forward_features(x, head_gates, output_attentions)
        h, pad = self._embed(x)
        attn_mask = pad[:, None, None, :] if pad is not None else None
        first = self.first_only
        for i, block in enumerate(self.blocks):
            h, _ = block(h, attn_mask, first_only=first and i == len(self.blocks) - 1)
        return self._classify(h, pad)

    @property
    def first_only(self) -> bool:
        """Whether :meth:`forward` computes only the pooled row in its last block."""
        return not self.training and self.config.pooling in FIRST_POSITION


def build_model(config: ModelConfig, seed: int | None = None) -> MHSAClassifier:
    """Create a model; with ``seed`` the initial weights are deterministic."""
    if seed is not None:
        torch.manual_seed(seed)
    return MHSAClassifier(config)
