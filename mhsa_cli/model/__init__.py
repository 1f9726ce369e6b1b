"""The attention model: a Transformer encoder classifier (pre-LN by default).

Design points that the compression stages rely on:

* Attention uses four plain ``nn.Linear`` projections (q, k, v, o), so dynamic
  int8 quantization covers all of them and heads can be sliced out.
* **Each layer has its own head count** (``ModelConfig.heads``); the head size
  ``head_dim`` is shared and stays fixed when heads are removed. A layer with
  zero heads is valid: its attention sub-layer adds only the output bias.
* **Each layer has its own feed-forward width** (``ModelConfig.d_ff``: an int
  for every layer, or a per-layer list after neuron pruning; ``ff_sizes`` always
  gives the list). A layer with 0 neurons is valid too: its feed-forward adds
  only the old ``ff2`` bias (``Block.ff_bias``).
* The default forward uses ``F.scaled_dot_product_attention``. Per-head gates
  (for importance scores) and attention probabilities (for distillation) are
  opt-in through :meth:`MHSAClassifier.forward_features`.
* In eval mode a first-position pooling (``cls``, ``first``) computes only
  row 0 of the last block (keys and values still for every row): the same
  formula for a fraction of the work, in torch and in the exported graph.
* A few switches (``norm``, ``embed_norm``, ``final_norm``, ``type_vocab_size``,
  ``pos_offset``, ``pad_id``, ``pooling="first"``, ``pooler``, ``activation``,
  ``ln_eps``) make the same modules and the same forward reproduce BERT-family
  encoders (BERT, RoBERTa, DistilBERT; see :mod:`mhsa_cli.imports`). Their
  defaults are the original mhsa model: same parameters, same names, same logits.

Shapes: B batch, T tokens (incl. CLS when used), D d_model, H heads, S head_dim.

Modules: :mod:`.config` (:class:`ModelConfig`), :mod:`.modules` (the network),
:mod:`.flops` (parameter and FLOP counts), :mod:`.probe` (inputs from the config alone);
everything is importable from here.
"""

from __future__ import annotations

from .config import ACTIVATIONS, FIRST_POSITION, NORMS, POOLERS, POOLINGS, ModelConfig, make_config
from .flops import attention_flops, count_parameters
from .modules import Attention, Block, EncoderOutput, MHSAClassifier, build_model
from .probe import probe_input

__all__ = ["ACTIVATIONS", "FIRST_POSITION", "NORMS", "POOLERS", "POOLINGS", "Attention", "Block", "EncoderOutput",
           "MHSAClassifier", "ModelConfig", "attention_flops", "build_model", "count_parameters", "make_config",
           "probe_input"]
