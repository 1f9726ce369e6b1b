"""mhsa: train, prune, quantize, distill and benchmark multi-head self-attention models."""

__version__ = "0.1.0"
