"""Class names: the one check every reader of stored or given labels applies.

Labels name a model's outputs in order (``labels[k]`` is logit ``k``), so a list
with a repeated name, a non-string or an empty name is refused wherever labels
come in: ``checkpoint.json`` and ``export.json`` (``task.labels``, ``labels``),
a Hugging Face ``config.json`` (``id2label``) and ``--labels``.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import MhsaError, cap


def check_labels(labels: Any, where: str, count: int | None = None) -> list[str]:
    """``labels`` checked: a list of distinct non-empty strings (``count`` of them when given).

    Args:
        labels: the value read (any JSON).
        where: what holds it, for the error line (``"export.json 'labels'"``).
        count: the number of classes the model has, if known.

    Returns:
        The labels as a list.

    Raises:
        MhsaError: not a list, a non-string or empty name, a repeated name, or another count.
    """
    if not isinstance(labels, list):
        raise MhsaError(f"{where} must be a list of class names, got {cap(json.dumps(labels, default=str), 60)}")
    for name in labels:
        if not isinstance(name, str) or not name.strip():
            raise MhsaError(f"{where} holds {cap(json.dumps(name, default=str), 60)}: class names must be "
                            "non-empty strings")
    seen: set[str] = set()
    for name in labels:
        if name in seen:
            raise MhsaError(f"{where} names class '{cap(name, 60)}' twice: class names must be distinct")
        seen.add(name)
    if count is not None and len(labels) != count:
        raise MhsaError(f"{where} names {len(labels)} classes but the model has {count}")
    return list(labels)
