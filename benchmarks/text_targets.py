"""Targets of issue #14 on the real text sets in ../shared/data (trec, sms).

    python benchmarks/text_targets.py [--data ../shared/data] [--only train,throughput,recipe,predict]
                                      [--threads 2]

1. train: `mhsa train --data train.csv --task-opt test_path=test.csv` (defaults only), whole
   command timed: trec >= 88 % test; sms >= 98.5 % and macro-F1 >= 0.96; each <= 60 s.
2. throughput: training samples/s on trec, same model and epochs, with length-aware batching
   (auto max_len, batches cut to their longest row, bucketed by length) vs without (every row
   padded to 64 tokens, the former default): target >= 3x, test accuracy within noise.
3. recipe: recipes/text-csv.yaml on trec: int8 and 50 %-heads models within 1 point of the baseline.
4. predict: `mhsa predict` of the recipe's int8 model on 100,000 rows (trec test texts repeated):
   rows/s, target >= 5,000 on 2 cores.

Every figure is printed with the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


THREADS = {"n": 2}


def mhsa(*args: str) -> float:
    """Run the CLI of this tree (with --threads for commands that take it); return wall seconds."""
    if args[0] in ("train", "predict"):
        args = (*args, "--threads", str(THREADS["n"]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mhsa_cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def train_targets(data: Path, tmp: Path) -> None:
    for name in ("trec", "sms"):
        out = tmp / f"{name}-baseline"
        before = load()
        wall = mhsa("train", "--data", str(data / name / "train.csv"), "--task-opt",
                    f"test_path={data / name / 'test.csv'}", "--device", "cpu", "--out", str(out))
        m = json.loads((out / "checkpoint.json").read_text())["metrics"]
        goal = (m["test_acc"] >= 0.88) if name == "trec" else (m["test_acc"] >= 0.985 and m["test_macro_f1"] >= 0.96)
        print(f"train {name}: test acc {100 * m['test_acc']:.2f} %, macro-F1 {m['test_macro_f1']:.4f}, "
              f"val acc {100 * m['val_acc']:.2f} %, best epoch {m['best_epoch']} of {m['epochs_run']} run, "
              f"wall {wall:.1f} s (training {m['train_seconds']:.1f} s); accuracy target "
              f"{'MET' if goal else 'MISSED'}, time target {'MET' if wall <= 60 else 'MISSED'} "
              f"[{before} -> {load()}]", flush=True)


def throughput(data: Path, epochs: int) -> None:
    import torch

    from mhsa_cli.config import TrainConfig, build_config
    from mhsa_cli.model import build_model, make_config
    from mhsa_cli.tasks import load_task
    from mhsa_cli.train import LoopConfig, evaluate, fit

    torch.set_num_threads(THREADS["n"])
    paths = dict(path=str(data / "trec" / "train.csv"), test_path=str(data / "trec" / "test.csv"))
    cfg = build_config(TrainConfig, {"data": paths["path"], "epochs": epochs})
    runs = {"padded to 64 (before)": (load_task("text", max_len=64, **paths), False),
            "length-aware (now)": (load_task("text", **paths), True)}
    seen = {}
    for name, (task, aware) in runs.items():
        for split in (task.train, task.val, task.test):
            split.ragged = aware  # off: every batch keeps all max_len columns, as before
        mc = make_config("tokens", task.max_len, task.num_classes, task.vocab_size, 0, cfg.layers, cfg.d_model,
                         cfg.heads, cfg.d_ff, cfg.dropout, cfg.pooling)
        model = build_model(mc, seed=0)
        before = load()
        r = fit(model, task, LoopConfig.from_config(cfg) if aware else
                LoopConfig(**{**LoopConfig.from_config(cfg).__dict__, "bucket": False}))
        train_s = sum(h["seconds"] for h in r.history)
        rate = len(task.train) * len(r.history) / train_s
        seen[name] = rate
        print(f"throughput trec, {name}: max_len {task.max_len}, {rate:,.0f} samples/s over {len(r.history)} "
              f"epochs (epoch time incl. validation), test acc {100 * evaluate(model, task.test):.2f} %, "
              f"val {100 * r.best_val_acc:.2f} % [{before} -> {load()}]", flush=True)
    a, b = seen.values()
    print(f"throughput ratio: {b / a:.2f}x (target >= 3x)", flush=True)


def recipe(data: Path, tmp: Path) -> Path:
    out = tmp / "text-csv"
    before = load()
    wall = mhsa("run", str(ROOT / "recipes" / "text-csv.yaml"), "--out", str(out),
                "--set", f"baseline.data={data / 'trec' / 'train.csv'}",
                "--set", f"baseline.task_options.test_path={data / 'trec' / 'test.csv'}",
                "--set", f"defaults.threads={THREADS['n']}")
    bench = json.loads(next(out.rglob("bench.json")).read_text())
    rows = {r["name"]: r for r in bench["rows"]}
    base = rows["baseline"]["test_acc"]
    for name, r in rows.items():
        delta = 100 * (r["test_acc"] - base)
        print(f"recipe text-csv on trec: {name}: test acc {100 * r['test_acc']:.2f} % ({delta:+.2f} pts), "
              f"macro-F1 {r.get('test_macro_f1') or 0:.4f}, heads {r['heads']}"
              + ("" if name == "baseline" else f", within 1 point: {'YES' if round(abs(delta), 6) <= 1 else 'NO'}"), flush=True)
    print(f"recipe wall {wall:.1f} s [{before} -> {load()}]", flush=True)
    return out


def predict_rate(data: Path, tmp: Path, model: Path, rows: int = 100_000) -> None:
    with open(data / "trec" / "test.csv", newline="", encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    big = tmp / "big.csv"
    with open(big, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        for i in range(rows):
            w.writerow([texts[i % len(texts)]])
    before = load()
    from mhsa_cli.config import PredictConfig, build_config
    from mhsa_cli.predict import predict

    r = predict(build_config(PredictConfig, {"checkpoint": str(model), "data": str(big),
                                             "out": str(tmp / "pred.csv"), "threads": THREADS["n"]}))
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"predict {r.rows:,} rows with {model.name} ({r.kind}): {r.seconds:.1f} s, {r.rows_per_s:,.0f} rows/s "
          f"(reading, tokenizing, writing included; target >= 5,000), peak RSS of this process "
          f"{rss:.0f} MiB [{before} -> {load()}]", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--only", default="train,throughput,recipe,predict")
    ap.add_argument("--epochs", type=int, default=5, help="throughput: epochs per run")
    ap.add_argument("--model", default=None, help="predict: model folder (default: the recipe's int8)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the targets are for 2 cores)")
    args = ap.parse_args()
    THREADS["n"] = args.threads
    print(f"threads {args.threads}, {load()}", flush=True)
    data, parts = Path(args.data), args.only.split(",")
    if not (data / "trec" / "train.csv").is_file():
        sys.exit(f"no data under {data} (expected trec/ and sms/ with train.csv and test.csv)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "train" in parts:
            train_targets(data, tmp)
        if "throughput" in parts:
            throughput(data, args.epochs)
        model = Path(args.model) if args.model else None
        if "recipe" in parts:
            out = recipe(data, tmp)
            model = model or next(p.parent for p in out.rglob("checkpoint.json") if p.parent.name == "baseline-int8")
        if "predict" in parts:
            if model is None:
                sys.exit("predict: give --model or run the recipe part too")
            predict_rate(data, tmp, model)


if __name__ == "__main__":
    main()
