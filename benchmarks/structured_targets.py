"""Target figures of issue 23: structured `mhsa prune` (heads, feed-forward neurons, whole blocks).

Steps (``--only``, in the order given; each writes under ``--out`` and ``report`` reads it all back):

- ``quick``: the quickstart model (trained with `mhsa train` defaults unless ``--quick CKPT``), and
- ``text``: the from-scratch trec text model (``--text CKPT``, else `mhsa train --data trec`):
  1. 50 % of heads + 50 % of neurons per layer removed (gradient importance), one fine-tuning epoch:
     test drop <= 1 point;
  2. the same ratios without fine-tuning: gradient beats seeded random (mean of 3 seeds).
- ``minilm``: the fine-tuned all-MiniLM-L6-v2 of issue 22 (``--teacher``, e.g. the ``teacher`` stage of
  ``recipes/pretrained-text.yaml`` on trec): the plan ``--target-flops 0.3`` (heads, neurons and blocks,
  lowest gradient / loss importance per FLOP first) with 5 epochs of KD fine-tuning (lr 1e-4) from the
  unpruned model:
  3. <= 40 % of the teacher's FLOPs and <= 1.0 pt below it on test;
  4. its ORT int8 export >= 2.5x faster than the teacher's ORT int8 at batch 1 and 32 (one interleaved
     `mhsa bench` run, trec validation rows);
  5. the prune step of that plan alone (scores + surgery + accuracy, no fine-tuning) <= 2 min, timed.
- ``budget``: 6. ``--target-latency 0.4`` in ORT int8 (1 thread, batch 1 and 32) lands within 10 % of
  the asked ratio (measured / asked - 1, as `mhsa prune` measures the final model).

    python benchmarks/structured_targets.py --only quick,text,report --text runs/trec-scratch
    python benchmarks/structured_targets.py --only minilm,budget,report --teacher runs/recipes/pretrained-text/teacher

Figures are printed with the load average (run one timing job at a time on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from _cli import ROOT, load, mark, mhsa, p50, pts

DATA = ROOT.parent / "shared" / "data"
MAX_DROP_POINTS = 1.0
HEAD_RATIO = FFN_RATIO = 0.5
PLAN = ("--method", "gradient", "--target-flops", "0.3")  # asked: <= 0.4; 0.3 aims at the >= 2.5x int8 target too
KD = ("--kd-weight", "0.5", "--kd-hidden-weight", "1.0", "--finetune-epochs", "5", "--lr", "1e-4", "--batch-size", "32")
BUDGET_LATENCY = 0.4


def metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "checkpoint.json").read_text())["metrics"]


def note(out: Path, key: str, value: Any) -> None:
    f = out / "structured_targets.json"
    doc = json.loads(f.read_text()) if f.is_file() else {}
    doc[key] = value
    f.write_text(json.dumps(doc, indent=1) + "\n")


# ------------------------------------------------------------------------- quickstart and trec text model

def small_targets(name: str, ckpt: Path, out: Path, threads: int, seeds: int) -> None:
    """Targets 1 and 2 on one from-scratch model (``name``: quick or text)."""
    base = (ckpt, "--ratio", HEAD_RATIO, "--ffn-ratio", FFN_RATIO, "--ffn-scope", "layer", "--threads", threads,
            "--device", "cpu", "--force")
    mhsa("prune", *base, "--method", "gradient", "--finetune-epochs", 1, "--out", out / f"{name}-finetuned")
    mhsa("prune", *base, "--method", "gradient", "--out", out / f"{name}-gradient")
    for s in range(seeds):
        mhsa("prune", *base, "--method", "random", "--seed", s, "--out", out / f"{name}-random-{s}")
    ft = metrics(out / f"{name}-finetuned")
    rnd = [metrics(out / f"{name}-random-{s}")["test_acc"] for s in range(seeds)]
    note(out, name, {"checkpoint": str(ckpt), "threads": threads, "before": ft["accuracy_before"]["test_acc"],
                     "finetuned": ft["test_acc"], "pruned_no_ft": ft["accuracy_pruned"]["test_acc"],
                     "flop_ratio": ft["flops"] / ft["flops_before"], "heads": ft["heads"], "d_ff": ft["d_ff"],
                     "gradient": metrics(out / f"{name}-gradient")["test_acc"], "random": rnd, "load": load()})


def trained(kind: str, out: Path, threads: int) -> Path:
    """The quickstart baseline or the trec text model, trained with `mhsa train` defaults."""
    folder = out / f"{kind}-baseline"
    if not (folder / "checkpoint.json").is_file():
        data = () if kind == "quick" else ("--data", DATA / "trec" / "train.csv", "--task-opt",
                                           f"test_path={DATA / 'trec' / 'test.csv'}")
        mhsa("train", *data, "--threads", threads, "--device", "cpu", "--out", folder, "--force")
    return folder


# ------------------------------------------------------------------------------------ MiniLM and budget

def minilm(teacher: Path, out: Path, threads: int) -> None:
    """Targets 3-5: the plan timed alone, then with KD fine-tuning, then both models benched."""
    step_s = mhsa("prune", teacher, *PLAN, "--threads", threads, "--device", "cpu", "--out", out / "minilm-step",
                  "--force")
    load_step = load()
    ft_s = mhsa("prune", teacher, *PLAN, *KD, "--threads", threads, "--device", "cpu", "--out", out / "minilm-pruned",
                "--force")
    mhsa("bench", teacher, out / "minilm-pruned", "--runtime", "torch,onnxruntime", "--batch-sizes", "1,32",
         "--threads", threads, "--out", out / "minilm-bench", "--force")
    note(out, "minilm", {"teacher": str(teacher), "threads": threads, "step_s": step_s, "load_step": load_step,
                         "finetune_s": ft_s, "load": load()})


def budget(teacher: Path, out: Path) -> None:
    """Target 6: --target-latency in ORT int8 at 1 thread, batch 1 and 32 (no fine-tuning)."""
    for b in (1, 32):
        mhsa("prune", teacher, "--target-latency", BUDGET_LATENCY, "--budget-runtime", "onnxruntime-int8",
             "--budget-threads", 1, "--budget-batch", b, "--device", "cpu", "--out", out / f"budget-b{b}", "--force")
    note(out, "budget", {"teacher": str(teacher), "load": load()})


# ----------------------------------------------------------------------------------------------- report


def _small_lines(name: str, d: dict[str, Any]) -> list[str]:
    drop = pts(d["before"], d["finetuned"])
    mean, sd = statistics.fmean(d["random"]), statistics.stdev(d["random"]) if len(d["random"]) > 1 else 0.0
    return [f"{name}: heads 50 % + neurons 50 % (gradient), FLOPs {d['flop_ratio']:.3f}x; test {100 * d['before']:.2f}"
            f" -> {100 * d['pruned_no_ft']:.2f} (no fine-tuning) -> {100 * d['finetuned']:.2f} % after 1 epoch "
            f"({-drop:+.2f} pt, >= -1.0): {mark(drop <= MAX_DROP_POINTS)}",
            f"{name}: no fine-tuning, gradient {100 * d['gradient']:.2f} % vs random {100 * mean:.2f} ± {100 * sd:.2f} "
            f"% ({len(d['random'])} seeds): {mark(d['gradient'] > mean)}"]


def _minilm_lines(out: Path, d: dict[str, Any]) -> list[str]:
    m, t = metrics(out / "minilm-pruned"), metrics(Path(d["teacher"]))
    flops, gap = m["flops"] / m["flops_before"], pts(m["test_acc"], t["test_acc"])
    lines = [f"MiniLM plan (--target-flops 0.3, KD fine-tuning): layers kept {len(m['heads'])}, "
             f"heads {m['heads']}, d_ff {m['d_ff']}; FLOPs {flops:.3f}x (<= 0.40: {mark(flops <= 0.4)}); test "
             f"{100 * m['test_acc']:.2f} % vs teacher {100 * t['test_acc']:.2f} % ({gap:+.2f} pt, >= -1.0): "
             f"{mark(gap >= -MAX_DROP_POINTS)}",
             f"MiniLM prune step alone (scores + surgery + accuracy): {d['step_s']:.0f} s (<= 120 s): "
             f"{mark(d['step_s'] <= 120)} ({d['load_step']})"]
    rows = json.loads((out / "minilm-bench" / "bench.json").read_text())["rows"]
    fp32 = next((r for r in rows if r["model"] == "minilm-pruned" and r["runtime"] == "torch"), None)
    paired = (fp32 or {}).get("acc_delta_paired")  # vs the teacher on the same test rows (bench >= session 4)
    if paired:
        lines.append(f"pruned vs teacher on the same test rows: {paired['delta_pts']:+.2f} pt, paired 95 % interval "
                     f"{paired['low_pts']:+.2f} to {paired['high_pts']:+.2f}, rows +{paired['gained']}/-{paired['lost']}")
    ort = {r["model"]: r for r in rows if r["runtime"] == "onnxruntime" and r["precision"] == "int8"
           and not r.get("variant")}
    t8, p8 = ort.get("teacher"), ort.get("minilm-pruned")
    for b in (1, 32):
        if t8 is None or p8 is None:
            lines.append("MiniLM ORT int8 rows missing from bench.json")
            break
        x = p50(t8, b) / p50(p8, b)
        lines.append(f"batch {b}: ORT int8 teacher {p50(t8, b):.3g} ms, pruned {p50(p8, b):.3g} ms: {x:.2f}x "
                     f"(>= 2.5: {mark(x >= 2.5)})")
    return lines


def _budget_lines(out: Path) -> list[str]:
    lines = []
    for b in (1, 32):
        f = out / f"budget-b{b}" / "pruning.json"
        if not f.is_file():
            continue
        lat = json.loads(f.read_text())["budget"]["latency"]
        err = lat["measured_ratio"] / BUDGET_LATENCY - 1
        lines.append(f"budget --target-latency {BUDGET_LATENCY} (ORT int8, 1 thread, batch {b}): measured "
                     f"{lat['measured_ratio']:.3f} ({100 * err:+.1f} %, within 10 %: {mark(abs(err) <= 0.1)}); "
                     f"FLOPs {lat['predicted_ratio']:.3f}")
    return lines


def report(out: Path) -> None:
    doc = json.loads((out / "structured_targets.json").read_text())
    lines = []
    for key, name in (("quick", "quickstart"), ("text", "trec text model")):
        if key in doc:
            lines += _small_lines(name, doc[key])
    if "minilm" in doc:
        lines += _minilm_lines(out, doc["minilm"])
    lines += _budget_lines(out)
    print("\n".join(f"- {line}" for line in lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="quick,text,report", help="steps: quick,text,minilm,budget,report")
    ap.add_argument("--quick", type=Path, help="quickstart baseline (default: train one)")
    ap.add_argument("--text", type=Path, help="trec text model (default: train one on ../shared/data/trec)")
    ap.add_argument("--teacher", type=Path, help="fine-tuned MiniLM checkpoint (minilm, budget)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of the quick/text steps")
    ap.add_argument("--minilm-threads", type=int, default=2, help="threads of the MiniLM prune and bench")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the random method (>= 3)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "structured-targets")
    a = ap.parse_args()
    steps = a.only.split(",")
    if {"minilm", "budget"} & set(steps) and not (a.teacher and (a.teacher / "checkpoint.json").is_file()):
        raise SystemExit("minilm/budget need --teacher: the fine-tuned MiniLM checkpoint folder")
    a.out.mkdir(parents=True, exist_ok=True)
    print(f"{load()} on {os.cpu_count()} cores")
    run = {"quick": lambda: small_targets("quick", a.quick or trained("quick", a.out, a.threads), a.out, a.threads,
                                          max(3, a.seeds)),
           "text": lambda: small_targets("text", a.text or trained("text", a.out, a.threads), a.out, a.threads,
                                         max(3, a.seeds)),
           "minilm": lambda: minilm(a.teacher, a.out, a.minilm_threads), "budget": lambda: budget(a.teacher, a.out),
           "report": lambda: report(a.out)}
    for step in steps:
        t0 = time.perf_counter()
        run[step]()
        print(f"{step}: {time.perf_counter() - t0:.0f} s ({load()})", flush=True)


if __name__ == "__main__":
    main()
