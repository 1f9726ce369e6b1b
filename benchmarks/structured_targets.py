"""Target figures of structured `mhsa prune` (heads + feed-forward neurons) on the quickstart model.

Issue 23's targets for the quickstart model (the trec / MiniLM targets need the
pretrained-encoder checkpoints and are not measured here yet):

1. Accuracy: 50 % of heads and 50 % of feed-forward neurons removed (gradient
   importance, ``--ffn-scope layer``), 1 epoch of fine-tuning: test accuracy drop
   <= 1 point.
2. Importance: at the same ratios without fine-tuning, ``gradient`` beats seeded
   ``random`` (mean over >= 3 seeds).

FLOPs per sample (``model.attention_flops``) before and after are printed with
each result. Latency is left to ``mhsa bench`` on the written checkpoints.

Run (trains the quickstart baseline first when no checkpoint is given; minutes on 2 cores)::

    python benchmarks/structured_targets.py
    python benchmarks/structured_targets.py runs/baseline --seeds 3 --out runs/structured-targets
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mhsa_cli.config import PruneConfig, TrainConfig, build_config  # noqa: E402
from mhsa_cli.prune import prune  # noqa: E402

MAX_DROP_POINTS = 1.0
HEAD_RATIO = 0.5
FFN_RATIO = 0.5


def baseline(path: str | None, work: Path) -> Path:
    """The given checkpoint, or the quickstart baseline trained with `mhsa train` defaults."""
    if path:
        return Path(path)
    from mhsa_cli.train import train

    out = work / "baseline"
    train(build_config(TrainConfig, {"out": str(out), "device": "cpu"}))
    return out


def _prune(ckpt: Path, out: Path, method: str, seed: int = 0, finetune_epochs: int = 0) -> Any:
    """One structured prune: HEAD_RATIO of heads and FFN_RATIO of neurons per layer."""
    return prune(build_config(PruneConfig, {
        "checkpoint": str(ckpt), "out": str(out), "method": [method], "ratio": HEAD_RATIO,
        "ffn_ratio": FFN_RATIO, "ffn_scope": "layer", "seed": seed, "finetune_epochs": finetune_epochs,
        "device": "cpu", "force": True}))


def accuracy_target(ckpt: Path, work: Path) -> dict[str, Any]:
    """Target 1: gradient, heads 50 % + neurons 50 %, 1 epoch of fine-tuning."""
    r = _prune(ckpt, work / "pruned", "gradient", finetune_epochs=1)
    drop = 100 * (r.before.test_acc - r.finetuned.test_acc)
    return {"heads_after": r.heads_after, "d_ff_after": r.d_ff_after, "flop_ratio": r.flops_after / r.flops_before,
            "test_acc_before": r.before.test_acc, "test_acc_pruned": r.pruned.test_acc,
            "test_acc_finetuned": r.finetuned.test_acc, "drop_points": drop, "target_met": drop <= MAX_DROP_POINTS}


def importance_target(ckpt: Path, work: Path, seeds: int) -> dict[str, Any]:
    """Target 2: gradient vs random (``seeds`` seeds) at the same ratios, no fine-tuning."""
    g = _prune(ckpt, work / "gradient", "gradient").pruned.test_acc
    rnd = [_prune(ckpt, work / f"random-{s}", "random", seed=s).pruned.test_acc for s in range(seeds)]
    mean = statistics.fmean(rnd)
    return {"gradient_test_acc": g, "random_test_acc": rnd, "random_test_acc_mean": mean,
            "random_test_acc_std": statistics.stdev(rnd) if len(rnd) > 1 else 0.0,
            "random_seeds": list(range(seeds)), "target_met": g > mean}


def report(acc: dict[str, Any], imp: dict[str, Any]) -> None:
    ok = lambda flag: "MET" if flag else "MISSED"  # noqa: E731
    print(f"\n1. heads {HEAD_RATIO:.0%} + neurons {FFN_RATIO:.0%} (gradient), 1 epoch fine-tune: heads "
          f"{acc['heads_after']}, d_ff {acc['d_ff_after']}, FLOPs {acc['flop_ratio']:.3f}x")
    print(f"   test acc before {100 * acc['test_acc_before']:.2f}%  pruned {100 * acc['test_acc_pruned']:.2f}%"
          f"  fine-tuned {100 * acc['test_acc_finetuned']:.2f}%  drop {acc['drop_points']:+.2f} pt"
          f"  (target <= {MAX_DROP_POINTS} pt): {ok(acc['target_met'])}")
    print(f"2. same ratios, no fine-tuning: gradient {100 * imp['gradient_test_acc']:.2f}%  vs random "
          f"{100 * imp['random_test_acc_mean']:.2f}% ± {100 * imp['random_test_acc_std']:.2f} "
          f"(seeds {imp['random_seeds']}): {ok(imp['target_met'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", help="quickstart baseline to reuse (default: train one)")
    ap.add_argument("--out", help="keep the pruned checkpoints and structured_targets.json here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for everything (fixed)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the random method (>= 3)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        ckpt = baseline(args.checkpoint, work)
        acc = accuracy_target(ckpt, work)
        imp = importance_target(ckpt, work, max(3, args.seeds))
        report(acc, imp)
        if args.out:
            doc = {"accuracy": acc, "importance": imp, "threads": args.threads, "checkpoint": str(ckpt)}
            (work / "structured_targets.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
