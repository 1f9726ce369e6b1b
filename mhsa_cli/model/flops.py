"""Counting a model: float parameters and matmul FLOPs of one inference forward."""

from __future__ import annotations

from torch import nn

from .config import FIRST_POSITION, ModelConfig

def count_parameters(model: nn.Module) -> int:
    """Number of float parameters (quantized packed weights are counted by quantize.py)."""
    return sum(p.numel() for p in model.parameters())


def attention_flops(config: ModelConfig, seq_len: int | None = None) -> int:
    """Multiply-accumulates x2 of one inference forward pass for one sample (matmuls only).

    Used to explain speedups after pruning: q/k/v/o projections, scores and
    weighted values per layer, feed-forward, classifier. With a first-position
    pooling the last block computes 1 query row (keys and values for all T),
    as :meth:`MHSAClassifier.forward` does in eval mode.
    """
    c = config
    T = positions(c, seq_len)
    total = base_flops(c, seq_len)
    for i, (h, d_ff) in enumerate(zip(c.heads, c.ff_sizes)):
        total += layer_flops(c, h, d_ff, T, last=i == len(c.heads) - 1)
    return total


def positions(config: ModelConfig, seq_len: int | None = None) -> int:
    """T: positions a block sees (``seq_len``, default ``max_len``; +1 with a ``cls`` token)."""
    return (seq_len or config.max_len) + (1 if config.pooling == "cls" else 0)


def base_flops(config: ModelConfig, seq_len: int | None = None) -> int:
    """FLOPs (x2 MACs) outside the blocks: feature embedding, pooler, classifier."""
    c = config
    embed = positions(c, seq_len) * c.feature_dim * c.d_model if c.input_kind == "features" else 0
    return 2 * (embed + c.d_model * c.num_classes + (c.d_model ** 2 if c.pooler != "none" else 0))


def layer_flops(config: ModelConfig, heads: int, d_ff: int, T: int, last: bool = False) -> int:
    """FLOPs (x2 MACs) of one block with ``heads`` heads and ``d_ff`` neurons at ``T`` positions;
    ``last``: the final block, which computes 1 query row under a first-position pooling."""
    c = config
    rows = 1 if last and c.pooling in FIRST_POSITION else T  # query rows
    inner = heads * c.head_dim
    total = 2 * T * c.d_model * inner + 2 * rows * c.d_model * inner  # k, v; q, o
    total += 2 * rows * T * inner  # scores + probs @ v
    total += 2 * rows * c.d_model * d_ff  # ff1 + ff2
    return 2 * total
