"""Targets of the ``mhsa export`` / ONNX Runtime issue (#13), measured side by side in one run.

Run (from the repository root)::

    python benchmarks/ort_targets.py                          # trains the quickstart models first
    python benchmarks/ort_targets.py --results results/quickstart --min-time 0.5

Models: the quickstart recipe's checkpoints (``baseline``, ``pruned``,
``baseline-int8``, ``pruned-int8``, ``student``), trained with
``recipes/quickstart.yaml`` into ``--workdir`` unless ``--results`` names a
finished quickstart results folder. The float ones are exported with
``mhsa export`` (its own checks: parity and accuracy per runtime).

Printed, for batch 1 and 32 and 1 and 2 threads, every latency from one
interleaved run per cell (``mhsa bench``'s :func:`measure_interleaved`: round-robin
in bursts of ``--burst-ms`` per model, warm caches; ``--burst-ms 0`` times one
call per model per round, where the other models evict a small model's weights
before each of its calls):

1. ORT fp32 vs torch logits, max abs gap per checkpoint kind (target <= 1e-4);
2. ORT int8 test accuracy vs the float model's (target: within 0.5 point);
3. the best deployable model (pruned or student, ORT int8, <= 1 point accuracy
   loss) p50 / torch fp32 baseline p50 (target <= 0.08);
4. that model vs ORT int8 of the uncompressed baseline (target >= 3x faster);
3b. 3 and 4 again with the three models timed in alternating blocks of
   ``--min-time`` each (a cross-check of the bursts: warm caches, as a
   deployment serving one model sees them);
5. bench's ORT p50 vs a bare ``InferenceSession.run`` loop on the same input and
   session settings (target within 10 %), alternating blocks, median of 3.

At 2 threads every ORT int8 model is also timed with 1 intra-op thread (rows
"... @1t"): the same session settings otherwise, i.e. a deployment on the same
2 cores that gives ORT one of them. 3, 3b and 4 print the figures at the cell's
thread count (ORT threads = torch's, as in ``mhsa bench``) and, apart, each
model's faster ORT setting within the budget ("within budget": the best
deployable model and the ORT int8 baseline each at their own faster setting).
3b also times them on both threads with ORT's default spinning (pool threads
spin-wait between calls, as a deployment serving only ORT runs them): in
blocks only, where the spin after a block ends in the next block's warm-up
(``mhsa bench`` keeps spinning off: there it would take a core from the next
model's timed calls).

Also: ORT-optimised op counts (the fusions ORT applies, and the export's one
``MultiHeadAttention`` node per layer) and the int8 accuracy
with and without ``reduce_range``. Results: ``<workdir>/ort_targets.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mhsa_cli.bench import measure_interleaved, measure_latency, timing_input  # noqa: E402
from mhsa_cli.bench.timer import BURST_MS  # noqa: E402
from mhsa_cli.checkpoint import load_checkpoint, load_model  # noqa: E402
from mhsa_cli.config import ExportConfig, RecipeConfig, build_config  # noqa: E402
from mhsa_cli.export import export  # noqa: E402
from mhsa_cli.report.export import FUSED_SHOWN  # noqa: E402
from mhsa_cli.runtimes import accuracy, load_runtime  # noqa: E402
from mhsa_cli.tasks import task_from_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"parity": 1e-4, "int8_drop_pts": 0.5, "best_vs_torch": 0.08, "best_vs_ort_int8_base": 3.0,
           "bare_gap": 0.10, "best_acc_loss_pts": 1.0}
FLOAT = ("baseline", "pruned", "student")
BATCHES, THREADS = (1, 32), (1, 2)


def quickstart(args: argparse.Namespace) -> Path:
    """The quickstart results folder (trained here unless --results is given)."""
    if args.results:
        return Path(args.results)
    from mhsa_cli.recipe import run_recipe

    out = args.workdir / "quickstart"
    print(f"running recipes/quickstart.yaml into {out} ...", flush=True)
    run_recipe(build_config(RecipeConfig, {"recipe": str(ROOT / "recipes" / "quickstart.yaml"), "out": str(out)}))
    return out


def exports(src: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``mhsa export`` of each float model (reused when present), and its self-check."""
    out = {}
    for name in FLOAT:
        folder = args.workdir / f"onnx-{name}"
        if not (folder / "export.json").is_file():
            export(build_config(ExportConfig, {"checkpoint": str(src / name), "out": str(folder), "force": True,
                                               "threads": 1}))
        out[name] = json.loads((folder / "export.json").read_text())
    return out


def reduce_range_check(src: Path, args: argparse.Namespace) -> dict[str, float]:
    """Baseline ORT int8 test accuracy with 8-bit (default) and 7-bit (reduce_range) weights."""
    folder = args.workdir / "onnx-baseline-reduce-range"
    if not (folder / "export.json").is_file():
        export(build_config(ExportConfig, {"checkpoint": str(src / "baseline"), "out": str(folder),
                                           "force": True, "threads": 1, "reduce_range": True}))
    return json.loads((folder / "export.json").read_text())["checks"]["test_acc"]


ONE = " @1t"  # an ORT int8 model with 1 intra-op thread in a cell of more threads
SPIN = " spin"  # an ORT int8 model with ORT's default spinning pool threads (timed in blocks only)


def models(src: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Every model of the comparison as ``x -> logits``, in one dict (table order)."""
    torch.set_num_threads(threads)
    m: dict[str, Any] = {f"torch fp32 {n}": load_model(src / n) for n in FLOAT}
    m.update({f"torch int8 {n}": load_model(src / f"{n}-int8") for n in ("baseline", "pruned")})
    for n in FLOAT:
        for p in ("fp32", "int8"):
            m[f"ORT {p} {n}"] = load_runtime("onnxruntime", args.workdir / f"onnx-{n}", p, threads).call
    if threads > 1:
        for n in FLOAT:
            m[f"ORT int8 {n}{ONE}"] = load_runtime("onnxruntime", args.workdir / f"onnx-{n}", "int8", 1).call
    return m


def spinning_models(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """ORT int8 sessions with ORT's default spinning (pool threads spin-wait between calls, for
    tens of ms after the last): timed only in blocks, where that spin ends in the next block's
    warm-up instead of in another model's timed calls."""
    from mhsa_cli.runtimes.folder import FILES
    from mhsa_cli.runtimes.onnxruntime import OrtCall, make_session

    return {f"ORT int8 {n}{SPIN}": OrtCall(make_session(args.workdir / f"onnx-{n}" / FILES["int8"], threads,
                                                        spinning=True), np.int64) for n in FLOAT}


def bare_loop(folder: Path, precision: str, x: torch.Tensor, threads: int, seconds: float) -> float:
    """p50 (ms) of ``session.run`` in a plain loop: no harness, numpy input made once."""
    from mhsa_cli.runtimes.folder import FILES
    from mhsa_cli.runtimes.onnxruntime import make_session

    s = make_session(folder / FILES[precision], threads)
    feed = {"input": x.numpy()}
    for _ in range(20):
        s.run(None, feed)
    times, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 20:
        t0 = time.perf_counter()
        s.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bare_vs_bench(args: argparse.Namespace, data: Any, threads: int, batch: int) -> dict[str, float]:
    """bench / bare p50 for the ORT int8 student and ORT fp32 baseline, alternating blocks, median of 3."""
    out = {}
    x = timing_input(data, batch)
    for name, p in (("student", "int8"), ("baseline", "fp32")):
        call = load_runtime("onnxruntime", args.workdir / f"onnx-{name}", p, threads).call
        ratios = []
        for _ in range(3):
            b = measure_latency(call, x, "cpu", args.min_time, 20, 5).latency_ms_p50
            ratios.append(b / bare_loop(args.workdir / f"onnx-{name}", p, x, threads, args.min_time))
        out[f"ORT {p} {name}"] = statistics.median(ratios)
    return out


def blocks(ms: dict[str, Any], data: Any, batch: int, args: argparse.Namespace, best: str) -> dict[str, Any]:
    """The targets' models timed in alternating blocks of ``min_time`` seconds each (3 rounds,
    median p50): each model's caches stay warm within its block, as in a deployment that serves one
    model (the bursts of :func:`cell` keep them warm too, at a finer grain).
    With @1t twins present, also the within-budget figures (each model at its faster setting)."""
    x = timing_input(data, batch)
    names = [n for n in ("torch fp32 baseline", best, "ORT int8 baseline", best + ONE, "ORT int8 baseline" + ONE,
                         best + SPIN, "ORT int8 baseline" + SPIN) if n in ms]
    p50: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(3):
            for n in names:
                p50[n].append(measure_latency(ms[n], x, "cpu", args.min_time, 20, 5).latency_ms_p50)
    m = {n: statistics.median(v) for n, v in p50.items()}
    out = {"p50_ms": m, "best_vs_torch": m[best] / m["torch fp32 baseline"],
           "ort_int8_base_vs_best": m["ORT int8 baseline"] / m[best]}
    if best + ONE in m:
        b, base = (min(m[n], m[n + ONE]) for n in (best, "ORT int8 baseline"))
        out["budget"] = {"best_vs_torch": b / m["torch fp32 baseline"], "ort_int8_base_vs_best": base / b}
    if best + SPIN in m:
        b, base = m[best + SPIN], m["ORT int8 baseline" + SPIN]
        out["spinning"] = {"best_vs_torch": b / m["torch fp32 baseline"], "ort_int8_base_vs_best": base / b}
    return out


def accuracies(data: Any, ms: dict[str, Any]) -> dict[str, float]:
    return {name: accuracy(m, data.test) for name, m in ms.items()}


def cell(ms: dict[str, Any], data: Any, batch: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """Per-round latencies (ms) of every model, timed round-robin in bursts (``mhsa bench``'s timer,
    ``--burst-ms`` per model and round; 0 = one call per round): the median of each burst, so
    entry i of each model is round i."""
    x = timing_input(data, batch)
    st = measure_interleaved({n: (m, x) for n, m in ms.items()}, "cpu", args.min_time, 20, 5,
                             burst_ms=args.burst_ms)
    return {n: s.per_round_ms() for n, s in st.items()}


def ratio(samples: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of a's latency / b's latency in the same round (robust to a busy machine)."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def faster(samples: dict[str, list[float]], name: str) -> str:
    """``name`` or its @1t twin, whichever has the lower p50 (the setting a deployment would pick)."""
    twin = name + ONE
    if twin not in samples:
        return name
    return min((name, twin), key=lambda n: statistics.median(samples[n]))


def summarize(samples: dict[str, list[float]], acc: dict[str, float]) -> dict[str, Any]:
    """p50s, the best deployable model (ORT int8 pruned/student within 1 point) and its ratios
    (medians of per-round ratios), and every model's ratio to the torch fp32 baseline; with
    @1t twins, the same within the thread budget (each model at its faster setting)."""
    p50 = {n: statistics.median(v) for n, v in samples.items()}
    base_acc = acc["torch fp32 baseline"]
    cands = [n for n in ("ORT int8 pruned", "ORT int8 student")
             if 100 * (base_acc - acc[n]) <= TARGETS["best_acc_loss_pts"]]
    best = min(cands, key=lambda n: p50[n]) if cands else None
    out = {"p50_ms": p50, "vs_torch_baseline": {n: ratio(samples, n, "torch fp32 baseline") for n in samples},
           "best": best, "best_vs_torch": ratio(samples, best, "torch fp32 baseline") if best else None,
           "ort_int8_base_vs_best": ratio(samples, "ORT int8 baseline", best) if best else None}
    if best and best + ONE in samples:
        b = min((faster(samples, n) for n in cands), key=lambda n: p50[n])
        base = faster(samples, "ORT int8 baseline")
        out["budget"] = {"best": b, "ort_int8_base": base, "best_vs_torch": ratio(samples, b, "torch fp32 baseline"),
                         "ort_int8_base_vs_best": ratio(samples, base, b)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()
    src = quickstart(args)
    data = task_from_spec(load_checkpoint(src / "baseline").task_spec)
    ex = exports(src, args)
    out: dict[str, Any] = {"load_start": load_start, "results": str(src), "min_time": args.min_time,
                           "burst_ms": args.burst_ms,
                           "parity": {n: ex[n]["checks"]["parity"]["max_abs_gap"] for n in FLOAT},
                           "export_test_acc": {n: ex[n]["checks"]["test_acc"] for n in FLOAT},
                           "optimized_ops": {n: {p: f["optimized_ops"] for p, f in ex[n]["files"].items()}
                                             for n in FLOAT},
                           "reduce_range": reduce_range_check(src, args), "cells": {}}
    for threads in THREADS:
        ms = models(src, args, threads)
        acc = accuracies(data, ms) if threads == THREADS[0] else out["accuracy"]
        out["accuracy"] = acc = {**acc, **{n: acc[n[:-len(ONE)]] for n in ms if n.endswith(ONE)}}
        for b in BATCHES:
            print(f"timing: {threads} thread(s), batch {b} ...", flush=True)
            summary = summarize(cell(ms, data, b, args), acc)
            spin = spinning_models(args, threads) if threads > 1 else {}
            out["cells"][f"t{threads}-b{b}"] = {
                **summary, "bench_vs_bare": bare_vs_bench(args, data, threads, b),
                "blocks": blocks({**ms, **spin}, data, b, args, summary["best"]) if summary["best"] else None}
    out["load_end"] = os.getloadavg()
    return out


def _num(v: float | None, width: int) -> str:
    return f"{v:{width}.3f}" if v is not None else " " * (width - 1) + "-"


def _extra(b: dict[str, Any] | None, label: str) -> None:
    """A line of extra figures under a 2-thread cell (within the budget; ORT's spinning)."""
    if b:
        print(f"      {label}: {b['best_vs_torch']:.3f}x torch fp32 baseline "
              f"{verdict(b['best_vs_torch'] <= TARGETS['best_vs_torch'])}; {b['ort_int8_base_vs_best']:.2f}x "
              f"faster than ORT int8 baseline {verdict(b['ort_int8_base_vs_best'] >= TARGETS['best_vs_ort_int8_base'])}")


def render(r: dict[str, Any]) -> None:
    print(f"\nload average at start {r['load_start'][0]:.2f}, at end {r['load_end'][0]:.2f} "
          f"(2 cores, shared); min_time {r['min_time']} s per model and cell; round-robin bursts of "
          f"{r['burst_ms']:g} ms per model (0: one call per model per round)")
    print("\n1. ORT fp32 vs torch, max |logit gap| (target <= 1e-4):")
    for n, g in r["parity"].items():
        print(f"   {n:9s} {g:.2e}  {verdict(g <= TARGETS['parity'])}")
    print("\n2. test accuracy (%) torch fp32 / ORT fp32 / ORT int8 (int8 target: within 0.5 point of float):")
    for n in FLOAT:
        a = r["export_test_acc"][n]
        drop = 100 * (a["checkpoint"] - a["ort_int8"])
        print(f"   {n:9s} {100 * a['checkpoint']:.2f} / {100 * a['ort_fp32']:.2f} / {100 * a['ort_int8']:.2f}  "
              f"(int8 {-drop:+.2f} pts) {verdict(drop <= TARGETS['int8_drop_pts'])}")
    rr = r["reduce_range"]
    print(f"   baseline ORT int8 with reduce_range (7-bit weights): {100 * rr['ort_int8']:.2f} "
          f"(8-bit: {100 * r['export_test_acc']['baseline']['ort_int8']:.2f})")
    names = list(next(iter(r["cells"].values()))["p50_ms"])
    cells = list(r["cells"])
    print("\np50 ms of the per-round medians (one interleaved run per cell) | latency / torch fp32 baseline "
          "(median of per-round ratios):")
    print(f"   {'model':24s}" + "".join(f"{c:>10s}" for c in cells) + " |" + "".join(f"{c:>9s}" for c in cells))
    names += [n for n in r["cells"][cells[-1]]["p50_ms"] if n not in names]
    for n in names:
        print(f"   {n:24s}" + "".join(_num(r["cells"][c]["p50_ms"].get(n), 10) for c in cells) + " |"
              + "".join(_num(r["cells"][c]["vs_torch_baseline"].get(n), 9) for c in cells))
    print("\n3./4. best deployable model (ORT int8, pruned or student, <= 1 point loss; per-round ratios):")
    for c in cells:
        x = r["cells"][c]
        if x["best"] is None:
            print(f"   {c}: no candidate within 1 point")
            continue
        print(f"   {c}: {x['best']}: {x['best_vs_torch']:.3f}x torch fp32 baseline p50 (target <= 0.08) "
              f"{verdict(x['best_vs_torch'] <= TARGETS['best_vs_torch'])}; "
              f"{x['ort_int8_base_vs_best']:.2f}x faster than ORT int8 baseline (target >= 3) "
              f"{verdict(x['ort_int8_base_vs_best'] >= TARGETS['best_vs_ort_int8_base'])}")
        if x.get("budget"):
            _extra(x["budget"], f"within the 2-thread budget ({x['budget']['best']} vs {x['budget']['ort_int8_base']})")
    print("\n3b. the same targets timed in alternating blocks (warm caches; median p50 of 3 rounds):")
    for c, x in r["cells"].items():
        if x.get("blocks"):
            k = x["blocks"]
            print(f"   {c}: {x['best']}: {k['best_vs_torch']:.3f}x torch fp32 baseline "
                  f"{verdict(k['best_vs_torch'] <= TARGETS['best_vs_torch'])}; "
                  f"{k['ort_int8_base_vs_best']:.2f}x faster than ORT int8 baseline "
                  f"{verdict(k['ort_int8_base_vs_best'] >= TARGETS['best_vs_ort_int8_base'])}")
            _extra(k.get("budget"), "within the 2-thread budget (each at its faster ORT setting)")
            _extra(k.get("spinning"), "ORT on both threads with its default spinning (blocks only)")
    print("\n5. bench p50 / bare InferenceSession.run loop p50 (target within 10 %):")
    for c in cells:
        print(f"   {c}: " + ", ".join(f"{n} {v:.3f} {verdict(abs(v - 1) <= TARGETS['bare_gap'])}"
                                      for n, v in r["cells"][c]["bench_vs_bare"].items()))
    fused = FUSED_SHOWN + ("QAttention",)
    print("\nORT-optimised graphs (fused ops / all nodes):")
    for n, per in r["optimized_ops"].items():
        for p, ops in per.items():
            shown = ", ".join(f"{k} {v}" for k, v in ops.items() if k in fused) or "none"
            print(f"   {n:9s} {p}: {shown} / {sum(ops.values())} nodes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", help="a finished quickstart results folder (else the recipe runs into --workdir)")
    p.add_argument("--workdir", type=Path, default=Path("runs/ort-targets"), help="exports and results go here")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per model and cell")
    p.add_argument("--burst-ms", type=float, default=BURST_MS,
                   help="round-robin: ms each model runs per round (0 = one call per round, as before)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = run(args)
    render(result)
    (args.workdir / "ort_targets.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.workdir / 'ort_targets.json'}")
    return result


if __name__ == "__main__":
    main()
