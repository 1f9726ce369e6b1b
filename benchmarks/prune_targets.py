"""Target figures of `mhsa prune` on the quickstart model (default `mhsa train`).

1. Accuracy: 50 % of heads removed (gradient importance), 1 epoch of fine-tuning:
   test accuracy drop <= 1 point.
2. Importance: `gradient` beats `random` at 50 % without fine-tuning
   (random: mean over >= 3 seeds).
3. Speed: CPU latency of the pruned vs the original model at batch 1 and 32,
   timed side by side (round-robin, warm-up, many repeats, median, inference
   mode, fixed threads) with the FLOP ratio next to it. An attention-free copy
   (every head removed) is timed too: it is the floor that pruning heads cannot
   go below, and with it the FLOPs predict the pruned latency:
   ``t_pred = t_floor + (t_orig - t_floor) * attention_flops_pruned / attention_flops_orig``.

Run (trains the quickstart baseline first, ~1-2 min on 2 cores)::

    python benchmarks/prune_targets.py
    python benchmarks/prune_targets.py runs/baseline --threads 2 --seeds 5 --out runs/prune-targets

The load average is printed: on a busy machine (load above the core count)
latencies measure the neighbours too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mhsa_cli.bench import measure_interleaved, timing_input  # noqa: E402
from mhsa_cli.checkpoint import load_checkpoint, load_model  # noqa: E402
from mhsa_cli.config import PruneConfig, TrainConfig, build_config  # noqa: E402
from mhsa_cli.model import attention_flops  # noqa: E402
from mhsa_cli.prune import prune, remove_heads  # noqa: E402
from mhsa_cli.tasks import task_from_spec  # noqa: E402

MAX_DROP_POINTS = 1.0
BATCH_SIZES = (1, 32)


def baseline(path: str | None, work: Path) -> Path:
    """The given checkpoint, or the quickstart baseline trained with `mhsa train` defaults."""
    if path:
        return Path(path)
    from mhsa_cli.train import train

    out = work / "baseline"
    train(build_config(TrainConfig, {"out": str(out), "device": "cpu"}))
    return out


def accuracy_target(ckpt: Path, work: Path) -> dict:
    """Target 1: gradient, 50 %, 1 epoch of fine-tuning."""
    r = prune(build_config(PruneConfig, {"checkpoint": str(ckpt), "out": str(work / "pruned"), "ratio": 0.5,
                                         "method": ["gradient"], "finetune_epochs": 1, "device": "cpu",
                                         "force": True}))
    drop = 100 * (r.before.test_acc - r.finetuned.test_acc)
    return {"heads_after": r.heads_after, "test_acc_before": r.before.test_acc,
            "test_acc_pruned": r.pruned.test_acc, "test_acc_finetuned": r.finetuned.test_acc,
            "drop_points": drop, "target_met": drop <= MAX_DROP_POINTS}


def importance_target(ckpt: Path, work: Path, seeds: int) -> dict:
    """Target 2: gradient vs random (mean of ``seeds`` seeds) at 50 %, no fine-tuning."""
    r = prune(build_config(PruneConfig, {"checkpoint": str(ckpt), "out": str(work / "sweep"), "sweep": [0.5],
                                         "method": ["gradient", "random"], "random_seeds": seeds,
                                         "device": "cpu", "force": True}))
    cell = {c["method"]: c for c in r.cells}
    g, rnd = cell["gradient"], cell["random"]
    return {"gradient_test_acc": g["test_acc_mean"], "random_test_acc_mean": rnd["test_acc_mean"],
            "random_test_acc_std": rnd["test_acc_std"], "random_test_acc": rnd["test_acc"],
            "random_seeds": rnd["seeds"], "target_met": g["test_acc_mean"] > rnd["test_acc_mean"]}


def latency_target(ckpt: Path, pruned: Path, min_time: float) -> dict:
    """Target 3: interleaved CPU latency of original, pruned and attention-free models."""
    source = load_checkpoint(ckpt)  # read once: the model and its task
    original, small = load_model(source), load_model(pruned)
    floor = remove_heads(original, {l: list(range(h)) for l, h in enumerate(original.heads)})
    flops = {n: attention_flops(m.config) for n, m in (("original", original), ("pruned", small),
                                                        ("floor", floor))}
    attn_ratio = (flops["pruned"] - flops["floor"]) / (flops["original"] - flops["floor"])
    data, out = task_from_spec(source.task_spec), {}
    for b in BATCH_SIZES:
        x = timing_input(data, b)
        stats = measure_interleaved({"original": (original, x), "pruned": (small, x), "floor": (floor, x)},
                                    "cpu", min_time=min_time, min_repeats=200, warmup=20)
        t = {n: s.latency_ms_p50 for n, s in stats.items()}
        predicted = t["floor"] + (t["original"] - t["floor"]) * attn_ratio
        out[b] = {"ms_p50": t, "ms_p90": {n: s.latency_ms_p90 for n, s in stats.items()},
                  "repeats": len(stats["original"].samples_ms), "speedup": t["original"] / t["pruned"],
                  "latency_ratio": t["pruned"] / t["original"], "predicted_ms": predicted,
                  "predicted_ratio": predicted / t["original"], "target_met": t["pruned"] < t["original"]}
    return {"flops": flops, "flop_ratio": flops["pruned"] / flops["original"],
            "attention_flop_ratio": attn_ratio, "batch": out}


def report(acc: dict, imp: dict, lat: dict, threads: int) -> None:
    ok = lambda flag: "MET" if flag else "MISSED"  # noqa: E731
    print(f"\n1. 50 % heads removed (gradient), 1 epoch fine-tune: heads {acc['heads_after']}")
    print(f"   test acc before {100 * acc['test_acc_before']:.2f}%  pruned {100 * acc['test_acc_pruned']:.2f}%"
          f"  fine-tuned {100 * acc['test_acc_finetuned']:.2f}%  drop {acc['drop_points']:+.2f} pt"
          f"  (target <= {MAX_DROP_POINTS} pt): {ok(acc['target_met'])}")
    print(f"2. 50 %, no fine-tuning: gradient {100 * imp['gradient_test_acc']:.2f}%  vs random "
          f"{100 * imp['random_test_acc_mean']:.2f}% ± {100 * imp['random_test_acc_std']:.2f} "
          f"(seeds {imp['random_seeds']}: {', '.join(f'{100 * a:.2f}' for a in imp['random_test_acc'])})"
          f": {ok(imp['target_met'])}")
    print(f"3. CPU latency, {threads} thread(s), p50 of interleaved calls; FLOPs/sample pruned/original "
          f"{lat['flop_ratio']:.3f} (attention part {lat['attention_flop_ratio']:.3f})")
    print(f"   {'batch':>5} {'original ms':>12} {'pruned ms':>10} {'floor ms':>9} {'pruned/orig':>12}"
          f" {'FLOP-predicted':>15} {'repeats':>8}")
    for b, r in lat["batch"].items():
        t = r["ms_p50"]
        print(f"   {b:>5} {t['original']:>12.3f} {t['pruned']:>10.3f} {t['floor']:>9.3f} {r['latency_ratio']:>12.3f}"
              f" {r['predicted_ratio']:>15.3f} {r['repeats']:>8}  faster: {ok(r['target_met'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", help="quickstart baseline to reuse (default: train one)")
    ap.add_argument("--out", help="keep the pruned checkpoint, sweep and prune_targets.json here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for everything (fixed)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the random method (>= 3)")
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of timed calls per model and batch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        ckpt = baseline(args.checkpoint, work)
        acc = accuracy_target(ckpt, work)
        imp = importance_target(ckpt, work, max(3, args.seeds))
        lat = latency_target(ckpt, work / "pruned", args.min_time)
        report(acc, imp, lat, args.threads)
        if args.out:
            doc = {"accuracy": acc, "importance": imp, "latency": lat, "threads": args.threads,
                   "checkpoint": str(ckpt)}
            (work / "prune_targets.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
