"""Render ``mhsa prune`` results: the importance heatmap, head counts, size and
accuracy before/after, and the sensitivity sweep. Also the PNG helpers
(matplotlib is optional: without it they return ``None``)."""

from __future__ import annotations

import io
from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import have_matplotlib, kv_table, pct, points, table
from .metrics import render_class_metrics

# background colours from low (removable) to high importance
PALETTE = ("grey23", "dark_blue", "blue3", "dodger_blue2", "deep_sky_blue1", "cyan1")


def _colour(value: float, lo: float, hi: float) -> str:
    """Palette colour of ``value`` within [lo, hi]."""
    t = 0.0 if hi <= lo else (value - lo) / (hi - lo)
    return PALETTE[min(len(PALETTE) - 1, int(t * len(PALETTE)))]


def heatmap_table(scores: list[list[float]], removed: list[list[int]], title: str) -> Table:
    """Layers x heads table of scores, coloured by value; removed heads struck and marked ✗."""
    width = max((len(s) for s in scores), default=0)
    flat = [v for s in scores for v in s]
    lo, hi = (min(flat), max(flat)) if flat else (0.0, 1.0)
    t = Table(title=title, title_justify="left")
    t.add_column("layer", justify="right")
    for h in range(width):
        t.add_column(f"h{h}", justify="right")
    t.add_column("kept", justify="right")
    for layer, s in enumerate(scores):
        gone = set(removed[layer]) if layer < len(removed) else set()
        cells = [_score_cell(v, h in gone, _colour(v, lo, hi)) for h, v in enumerate(s)]
        cells += [Text("")] * (width - len(s))
        t.add_row(str(layer), *cells, f"{len(s) - len(gone)}/{len(s)}")
    return t


def _score_cell(value: float, removed: bool, colour: str) -> Text:
    if removed:
        return Text(f"✗ {value:.3g}", style=f"strike dim on {colour}")
    return Text(f"{value:.3g}", style=f"bold white on {colour}")


def _kept_table(r: Any) -> Table:
    """Per original layer: kept or dropped, heads and feed-forward width before -> after."""
    kept = getattr(r, "layers_kept", None) or list(range(len(r.heads_before)))
    ff_before = getattr(r, "d_ff_before", None) or []
    after = {orig: i for i, orig in enumerate(kept)}
    rows = []
    for layer, before in enumerate(r.heads_before):
        i = after.get(layer)
        heads = [h for h in range(before) if h not in r.removed[layer]] if i is not None else []
        ff = (f"{ff_before[layer]} → {r.d_ff_after[i] if i is not None else 0}") if ff_before else "–"
        rows.append((str(layer), "kept" if i is not None else "dropped", before,
                     r.heads_after[i] if i is not None else 0, ff,
                     ", ".join(map(str, heads)) or ("none (0 heads)" if i is not None else "–")))
    return table("Per layer (original numbering)", ["layer", "block", "heads before", "heads after",
                                                      "d_ff", "heads kept (original index)"], rows)


def _layer_table(r: Any) -> Table:
    """Block importance of the step that chose blocks (original numbering)."""
    rows = [(str(l), "–" if v is None else f"{v:.4g}", "dropped" if l in r.layers_dropped else "kept")
            for l, v in enumerate(r.layer_scores)]
    scored_on = getattr(r, "layers_scored_on", "validation split")
    return table(f"Layer importance ({scored_on}; higher = kept first)", ["layer", "score", "block"], rows)


def _ratio(after: float, before: float) -> str:
    return "–" if not before else f"{after / before:.3f}x"


def _size_table(r: Any) -> Table:
    at = f"{r.flops_seq_len} positions" if r.flops_seq_len else "max_len"
    return table(f"Size (FLOPs: one sample at {at})", ["", "before", "after", "after/before"], [
        ("parameters", r.params_before, r.params_after, _ratio(r.params_after, r.params_before)),
        ("FLOPs", r.flops_before, r.flops_after, _ratio(r.flops_after, r.flops_before)),
        ("heads", sum(r.heads_before), sum(r.heads_after), _ratio(sum(r.heads_after), sum(r.heads_before))),
        *_structure_rows(r),
    ])


def _structure_rows(r: Any) -> list[tuple[Any, ...]]:
    """Layers and feed-forward neurons before / after (absent on older results)."""
    if not getattr(r, "d_ff_before", None):
        return []
    layers = len(r.layers_kept)
    return [("layers", len(r.heads_before), layers, _ratio(layers, len(r.heads_before))),
            ("feed-forward neurons", sum(r.d_ff_before), sum(r.d_ff_after),
             _ratio(sum(r.d_ff_after), sum(r.d_ff_before)))]


def _budget_table(b: dict[str, Any]) -> Table:
    """Budget mode: what was asked, the FLOPs reached, latency predicted vs measured, losses per kind."""
    asked = (f"FLOPs ≤ {b['target_flops']:g}×" if b.get("target_flops") is not None
             else f"latency ≤ {b['target_latency']:g}×")
    rows = [("asked", asked), ("FLOPs fraction aimed at", f"{b['flops_fraction']:.3f}"),
            ("FLOPs after / before", f"{b['flops_ratio']:.3f}× (at {b['seq_len']} positions)")]
    lat = b.get("latency")
    if lat:
        where = f"{lat['runtime']}, {lat['threads']} thread(s), batch {lat['batch']}"
        rows += [("latency predicted (FLOPs)", f"{lat['predicted_ratio']:.3f}×"),
                 ("latency in the search", f"{lat['search_ratio']:.3f}× ({len(lat['rounds'])} rounds)"),
                 ("latency measured", f"{lat['measured_ratio']:.3f}× ({where})")]
    rows += [(f"{kind} removed", f"{v['removed']} ({pct(v['fraction'])})") for kind, v in b["lost"].items()]
    return kv_table("Budget (greedy by importance per FLOP)", rows)


def _accuracy_table(r: Any) -> Table | str:
    if r.before is None:
        return f"accuracy: not measured ({getattr(r, 'accuracy_not_measured', None) or 'no data'})"
    stages = [("before pruning", r.before), ("after pruning", r.pruned)]
    if r.finetuned is not None:
        stages.append(("after fine-tuning", r.finetuned))
    rows = [(name, pct(a.val_acc), pct(a.test_acc), points(a.test_acc - r.before.test_acc)) for name, a in stages]
    return table("Accuracy", ["stage", "validation", "test", "test Δ"], rows)


def _steps_table(r: Any) -> Table:
    rows = [(s["step"], ",".join(map(str, s.get("layers_dropped", []))) or "–", "+".join(map(str, s["heads"])),
             "+".join(map(str, s.get("d_ff", []))), pct(s.get("val_acc_pruned")), pct(s.get("test_acc_pruned")),
             pct(s.get("val_acc_finetuned")), pct(s.get("test_acc_finetuned"))) for s in r.steps]
    return table("Iterative steps", ["step", "layers dropped", "heads", "d_ff", "val pruned", "test pruned",
                                     "val tuned", "test tuned"], rows)


def render_single(r: Any, console: Console) -> None:
    """Everything about one pruning run (a :class:`mhsa_cli.prune.PruneResult`)."""
    if r.scores:
        scored_on = getattr(r, "scored_on", "validation split")
        console.print(heatmap_table(r.scores, r.removed, f"Head importance ({r.method}, {scored_on}; "
                                                         f"✗ = removed, scope {r.scope})"))
    if getattr(r, "layer_scores", None):
        console.print(_layer_table(r))
    console.print(_kept_table(r))
    console.print(_size_table(r))
    if getattr(r, "budget", None):
        console.print(_budget_table(r.budget))
    console.print(_accuracy_table(r), markup=False, highlight=False)
    if len(r.steps) > 1:
        console.print(_steps_table(r))
    if getattr(r, "test_classes", None):
        render_class_metrics(r.test_classes, console, "test, pruned model")
    console.print(kv_table("Output", [("checkpoint", r.out)] + [("file", f) for f in r.files]))


def _cell_text(c: dict[str, Any]) -> str:
    if len(c["seeds"]) > 1:
        return f"{pct(c['test_acc_mean'])} ± {100 * c['test_acc_std']:.2f}"
    return pct(c["test_acc_mean"])


def sweep_table(r: Any) -> Table:
    """Rows = ratio, columns = method, cells = test accuracy without fine-tuning."""
    by = {(c["ratio"], c["method"]): c for c in r.cells}
    rows = []
    for ratio in r.ratios:
        first = by[(ratio, r.methods[0])]
        rows.append([f"{ratio:g}", first["heads_removed"]] + [_cell_text(by[(ratio, m)]) for m in r.methods])
    seeds = f"; random: mean ± std over {len(r.seeds)} seeds" if r.seeds else ""
    return table(f"Sensitivity: test accuracy without fine-tuning (scope {r.scope}{seeds})",
                 ["ratio", "heads removed"] + list(r.methods), rows)


def render_sweep(r: Any, console: Console) -> None:
    """The ratio x method table of a :class:`mhsa_cli.prune.SweepResult`."""
    console.print(sweep_table(r))
    console.print(kv_table("Baseline and files", [("validation accuracy", pct(r.baseline.val_acc)),
                                                  ("test accuracy", pct(r.baseline.test_acc))]
                           + [("file", f) for f in r.files]))


def sweep_csv_rows(r: Any) -> tuple[list[str], list[list[Any]]]:
    """Long-format sweep table (one row per ratio and method) for sweep.csv."""
    cols = ["ratio", "heads_removed", "method", "seeds", "test_acc_mean", "test_acc_std", "val_acc_mean",
            "params", "flops"]
    return cols, [[c["ratio"], c["heads_removed"], c["method"], len(c["seeds"]), c["test_acc_mean"],
                   c["test_acc_std"], c["val_acc_mean"], c["params"], c["flops"]] for c in r.cells]


RENDERERS: dict[str, Callable[[Any, Console], None]] = {
    "PruneResult": render_single,
    "SweepResult": render_sweep,
}


def render_prune(result: Any, console: Console) -> None:
    """Render what :func:`mhsa_cli.prune.prune` returned (a single run or a sweep)."""
    RENDERERS[type(result).__name__](result, console)


# --------------------------------------------------------------------------- PNG

def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def heatmap_png(scores: list[list[float]], removed: list[list[int]], title: str) -> bytes | None:
    """Layers x heads heatmap as PNG bytes (removed heads marked ✗); None without matplotlib."""
    if not have_matplotlib() or not scores:
        return None
    import numpy as np

    width = max(1, max(len(s) for s in scores))
    grid = np.full((len(scores), width), np.nan)
    for layer, s in enumerate(scores):
        grid[layer, : len(s)] = s
    fig = _figure(1.2 + 0.8 * width, 1.0 + 0.6 * len(scores))
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for layer, s in enumerate(scores):
        for h, v in enumerate(s):
            mark = "✗\n" if h in removed[layer] else ""
            light = im.norm(v) > 0.6  # viridis turns yellow: dark text there
            ax.text(h, layer, f"{mark}{v:.2g}", ha="center", va="center", fontsize=8,
                    color="black" if light else "white")
    ax.set(xlabel="head", ylabel="layer", title=title, xticks=range(width), yticks=range(len(scores)))
    fig.colorbar(im, ax=ax)
    return _png(fig)


def sweep_png(r: Any) -> bytes | None:
    """Test accuracy vs fraction of heads removed, one line per method (random: ± std band)."""
    if not have_matplotlib():
        return None
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    for m in r.methods:
        cells = [c for c in r.cells if c["method"] == m]
        x = [c["ratio"] for c in cells]
        mean = [100 * c["test_acc_mean"] for c in cells]
        std = [100 * c["test_acc_std"] for c in cells]
        (line,) = ax.plot(x, mean, marker="o", label=m)
        if any(std):  # ± 1 std over seeds, clipped to what accuracy can be
            ax.fill_between(x, [max(0.0, a - b) for a, b in zip(mean, std)],
                            [min(100.0, a + b) for a, b in zip(mean, std)], color=line.get_color(), alpha=0.2)
    ax.axhline(100 * r.baseline.test_acc, color="grey", linestyle="--", label="unpruned")
    ax.set(xlabel="fraction of heads removed", ylabel="test accuracy (%)",
           title=f"Head pruning sensitivity (no fine-tuning, scope {r.scope})")
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)

