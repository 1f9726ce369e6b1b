"""Render ``mhsa info`` (a checkpoint) and ``mhsa tasks`` (the registry)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from rich.console import Console

from . import fmt, human_bytes, kv_table, table


def parameter_groups(tensors: dict[str, Any]) -> dict[str, int]:
    """Element counts per component (embedding, attention, feed-forward, norms, head)."""
    groups: dict[str, int] = defaultdict(int)
    for name, t in tensors.items():
        if ".attn." in name:
            key = "attention"
        elif ".ff" in name:
            key = "feed-forward"
        elif "ln" in name:
            key = "layer norms"
        elif name.startswith(("embed", "pos", "cls", "type_embed")):
            key = "embeddings"
        elif name.startswith(("head", "pooler")):
            key = "classifier"
        else:
            key = "other"
        groups[key] += t.numel()
    return dict(groups)


def render_info(ckpt: Any, console: Console) -> None:
    """Architecture, task, metrics, environment and lineage of a checkpoint."""
    from ..checkpoint import size_on_disk

    meta = ckpt.meta
    m = meta["model"]
    console.print(kv_table(f"Checkpoint {ckpt.path}", [
        ("kind", meta["kind"]),
        ("id", meta.get("id", "–")),
        ("size on disk", human_bytes(size_on_disk(ckpt.path))),
        ("layers", len(m["heads"])),
        ("heads per layer", ", ".join(map(str, m["heads"]))),
        ("d_model / head_dim / d_ff", f"{m['d_model']} / {m['head_dim']} / {_per_layer(m['d_ff'])}"),
        ("input", f"{m['input_kind']} (max_len {m['max_len']})"),
        ("classes", m["num_classes"]),
        ("pooling", m["pooling"]),
        ("blocks", f"{m.get('norm', 'pre')}-LN, {m.get('activation', 'gelu')}, LayerNorm eps {m.get('ln_eps', 1e-5):g}, "
                   f"pooler {m.get('pooler', 'none')}, pad id {m.get('pad_id', 0)}"),
    ]))
    task = dict(meta["task"])
    for key in ("vocab", "labels"):
        if isinstance(task.get(key), list) and len(task[key]) > 12:
            task[key] = f"{len(task[key])} entries"
    if isinstance(task.get("tokenizer"), dict):  # a tokenizers JSON: its model type and size
        model = task["tokenizer"].get("model") or {}
        task["tokenizer"] = f"{model.get('type', '?')}, {len(model.get('vocab') or [])} tokens (tokenizers JSON)"
    console.print(kv_table("Task", [(k, json.dumps(v) if isinstance(v, (list, dict)) else fmt(v)) for k, v in task.items()]))
    groups = parameter_groups(ckpt.tensors)
    console.print(table("Parameters (tensor elements)", ["component", "elements"],
                        [*sorted(groups.items()), ("total", sum(groups.values()))]))
    metrics = {k: v for k, v in meta.get("metrics", {}).items() if not isinstance(v, (dict, list))}
    console.print(kv_table("Metrics", metrics.items()))
    env = meta.get("environment", {})
    console.print(kv_table("Environment", [(k, fmt(v)) for k, v in env.items()]))
    for row in lineage_tables(meta.get("lineage", [])):
        console.print(row)


def lineage_tables(lineage: list[dict[str, Any]]) -> list[Any]:
    """One key/value table per lineage step (oldest first): every setting whole, one per row.

    Values wrap at spaces and fold only a word longer than the terminal; nothing
    is cut (a single settings line would need slicing or an ellipsis).
    """
    tables = []
    for i, step in enumerate(lineage):
        settings = {k: v for k, v in (step.get("settings") or {}).items() if k != "force"}
        rows = [("parent", step.get("parent") or "–"), ("time", step.get("time", "–")),
                *((k, "–" if v is None else v if isinstance(v, str) else json.dumps(v)) for k, v in settings.items())]
        tables.append(kv_table(f"Lineage {i} (oldest first): {step.get('operation', '?')}", rows))
    return tables


def render_tasks(console: Console) -> None:
    """The task registry: name, input kind, description and options."""
    from ..tasks import TASKS

    rows = [(t.name, t.input_kind, t.classes, t.size, t.description, ", ".join(t.options))
            for t in TASKS.values()]
    console.print(table("Tasks", ["task", "input", "classes", "size", "description",
                                  "options (--task-opt key=value)"], rows))


def _per_layer(v: Any) -> str:
    """An int, or a per-layer list as ``a, b, c`` (like the heads row)."""
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)
