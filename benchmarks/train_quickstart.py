"""Target check for `mhsa train` defaults: >= 95 % test accuracy on the quickstart task
in <= 90 s of wall time (whole command, start-up included) on this machine.

    python benchmarks/train_quickstart.py [--runs 1]

Prints the wall time, the training time the checkpoint recorded, and test accuracy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "baseline"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mhsa_cli", "train", "--device", "cpu", "--out", str(out)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            meta = json.loads((out / "checkpoint.json").read_text())
        m = meta["metrics"]
        rows.append((wall, m["train_seconds"], m["test_acc"]))
        print(f"run {i + 1}: wall {wall:.1f}s  training {m['train_seconds']:.1f}s  "
              f"test acc {100 * m['test_acc']:.2f}%  ({meta['environment']['cpu']}, "
              f"{meta['environment']['torch_threads']} threads, torch {meta['environment']['torch']})")
    worst_wall, worst_acc = max(r[0] for r in rows), min(r[2] for r in rows)
    ok = worst_wall <= 90 and worst_acc >= 0.95
    print(f"target (>= 95 % in <= 90 s): {'MET' if ok else 'MISSED'} "
          f"(worst wall {worst_wall:.1f}s, worst test acc {100 * worst_acc:.2f}%)")


if __name__ == "__main__":
    main()
