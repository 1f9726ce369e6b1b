"""Check an imported model against ``transformers``' own forward (when it is installed).

``transformers`` is an optional oracle, never a dependency: without it the
checkpoint records that the check was not run. With it, the same folder is
loaded by ``transformers`` (safetensors only, local files only: nothing is
unpickled or downloaded) and both models run the same tokenized rows:

* a classifier whose head was kept: the logits are compared;
* otherwise (a base model, or a fresh head): the last hidden states at the
  real (non-padding) positions, and the pooler output when both have one.

The result is two flat metrics (``hf_check``: what was compared, ``hf_max_gap``:
the largest absolute difference), so ``mhsa info`` shows them.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..model import MHSAClassifier

TOLERANCE = 1e-4  # max |gap| expected from float32 rounding alone
SAMPLE_TEXTS = ("what is the capital of france ?", "a great film , though far too long",
                "call me back when you get this message", "how many feet are in a mile ?",
                "ok", "the quick brown fox jumps over the lazy dog and keeps on running far away")


def _transformers() -> Any | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers


def sample_rows(model: MHSAClassifier, tokenizer: dict[str, Any] | None, data: Any, n: int = 8) -> torch.Tensor:
    """(N, T) ids to compare on: validation rows of ``data`` (never test), else built-in texts,
    else seeded random ids (no tokenizer); rows of different lengths, right-padded."""
    c = model.config
    if data is not None and len(data.val.x):
        return data.val.x[:n]
    if tokenizer is not None:
        from ..tasks.hf_text import encode

        return encode(list(SAMPLE_TEXTS), tokenizer, min(32, c.max_len), c.pad_id)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, c.vocab_size, (4, min(16, c.max_len)), generator=g)
    x[x == c.pad_id] = (c.pad_id + 1) % c.vocab_size
    for i, length in enumerate((16, 9, 5, 2)):  # varied real lengths
        x[i, length:] = c.pad_id
    return x


def _their_model(tf: Any, folder: str, logits: bool) -> Any:
    auto = tf.AutoModelForSequenceClassification if logits else tf.AutoModel
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return auto.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()


def _gap(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shape {tuple(a.shape)} vs transformers' {tuple(b.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    return float((a - b).abs().max())


def compare(model: MHSAClassifier, folder: str, x: torch.Tensor, logits: bool,
            fresh: list[str] = ()) -> dict[str, Any]:
    """Run ``model`` and transformers' model of ``folder`` on ``x``; the metrics to record.

    Args:
        model: the imported model (eval mode).
        folder: the Hugging Face folder it came from.
        x: (N, T) token ids, right-padded with the model's pad id.
        logits: compare logits (the folder's classifier was kept) instead of hidden states.
        fresh: modules initialised fresh at import (a fresh pooler is not compared).

    Returns:
        ``{"hf_check": description, "hf_max_gap": float}``, or only ``hf_check``
        saying why the check was not run.
    """
    tf = _transformers()
    if tf is None:
        return {"hf_check": "not run: transformers is not installed (pip install transformers)"}
    try:
        theirs_model = _their_model(tf, folder, logits)
    except Exception as exc:  # an oracle that cannot load the folder is reported, not fatal
        return {"hf_check": f"not run: transformers could not load the folder ({str(exc).splitlines()[0][:160]})"}
    real = x != model.config.pad_id  # (N, T)
    with torch.no_grad():
        out = theirs_model(input_ids=x, attention_mask=real.long())
        if logits:
            gap, what = _gap(model(x), out.logits, "logits"), "logits"
        else:
            ours = model(x, features=True).hidden_states[-1]  # (N, T, D)
            gaps, what = [_gap(ours[real], out.last_hidden_state[real], "hidden states")], "last hidden states"
            pooled = getattr(out, "pooler_output", None)
            if pooled is not None and getattr(model, "pooler", None) is not None and "pooler" not in fresh:
                mine = torch.tanh(model.pooler(model.ln_f(ours[:, 0])))  # BERT's pooler: tanh(W h_cls + b)
                gaps.append(_gap(mine, pooled, "pooler output"))
                what += " + pooler output"
            gap = float(torch.tensor(gaps).max())  # NaN propagates
    return {"hf_check": f"{what} vs transformers {tf.__version__} on {len(x)} rows",
            "hf_max_gap": gap}


def note(metrics: dict[str, Any]) -> str | None:
    """A note when the check was not run or its gap exceeds :data:`TOLERANCE` (NaN included)."""
    gap = metrics.get("hf_max_gap")
    if gap is None:
        return str(metrics.get("hf_check", "transformers check not run"))
    if not gap <= TOLERANCE:  # also NaN
        return (f"max |gap| to transformers {gap:.3g} exceeds {TOLERANCE:g}: the imported model does not compute "
                "what transformers computes; please report it with the config.json")
    return None
