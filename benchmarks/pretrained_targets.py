"""Targets of issue #22: a real pretrained encoder (all-MiniLM-L6-v2) fine-tuned, compressed, deployed.

    bash ../shared/models/get-minilm.sh          # once: fetches and checks the model
    python benchmarks/pretrained_targets.py [--model DIR] [--data ../shared/data] [--threads 2]
                                            [--only sms,recipe,scratch,report] [--out runs/pretrained-targets]

1. sms: `mhsa import` + `mhsa train --init` (defaults only) on sms: test >= 99.0 %, macro-F1 >= 0.97;
   the import's gap to transformers <= 1e-4.
2. recipe: `mhsa run recipes/pretrained-text.yaml` on trec (official test split), whole run timed
   (<= 30 min): the teacher (default fine-tuning, >= 96.0 % test, its training <= 10 min), 50 %-heads
   pruned + fine-tuned (<= 1.0 pt below the teacher), a 3-layer student from the teacher's layers with
   logit + hidden-state KD (<= 1.0 pt), and the deployable model (the teacher with half of every block's
   heads and 80 % of its neurons removed and KD fine-tuned, then 3 of its blocks distilled; exported, ORT int8). Its bench (torch + ORT fp32 / int8 / int8-static,
   all rows interleaved in one run, batch 1 and 32 on trec-length validation rows) gives the ratios:
   the deployable model (deploy-onnx's int8 file: the variant its gate kept on validation) p50 <= 0.15x
   the teacher's torch fp32 p50 and >= 3x faster than the teacher's ORT int8, at batch 1 and 32, within
   1.0 pt of the teacher; the ORT rows that meet all three on test are listed, never chosen.
3. scratch: a from-scratch mhsa text model (`mhsa train --data`, text defaults) on the same files.
4. report: every target as measured, from the files the steps wrote (rerunnable alone).

Every figure is printed with the load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from _cli import ROOT, load, mark, mhsa, p50, pts

from mhsa_cli.export.command import INT8_PRECISION  # int8 method -> its bench row's precision

DEFAULT_MODEL = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mhsa-models" / "all-MiniLM-L6-v2"
THREADS = {"n": 2}


def meta(folder: Path) -> dict:
    return json.loads((folder / "checkpoint.json").read_text())


def note(path: Path, key: str, value: object) -> None:
    """Keep step figures (wall times, loads) beside the outputs, for the report step."""
    f = path / "figures.json"
    d = json.loads(f.read_text()) if f.is_file() else {}
    d[key] = value
    f.write_text(json.dumps(d, indent=1))


def sms(model: Path, data: Path, out: Path) -> None:
    d = data / "sms"
    before = load()
    t_imp = mhsa("import", str(model), "--data", str(d / "train.csv"), "--task-opt", f"test_path={d / 'test.csv'}",
                 "--out", str(out / "sms-import"), "--force")
    t_ft = mhsa("train", "--init", str(out / "sms-import"), "--threads", str(THREADS["n"]), "--out",
                str(out / "sms-teacher"), "--force")
    note(out, "sms", {"import_s": t_imp, "finetune_s": t_ft, "load_before": before, "load_after": load()})
    print(f"sms: import {t_imp:.0f} s, fine-tune {t_ft:.0f} s ({before} -> {load()})")


def recipe(model: Path, data: Path, out: Path) -> None:
    d = data / "trec"
    before = load()
    wall = mhsa("run", str(ROOT / "recipes" / "pretrained-text.yaml"), "--set", f"import.path={model}",
                "--set", f"import.data={d / 'train.csv'}", "--set", f"import.task_options.test_path={d / 'test.csv'}",
                "--set", f"defaults.threads={THREADS['n']}", "--out", str(out / "trec"))
    note(out, "recipe", {"wall_s": wall, "load_before": before, "load_after": load()})
    print(f"recipe on trec: {wall:.0f} s ({before} -> {load()})")


def scratch(data: Path, out: Path) -> None:
    d = data / "trec"
    wall = mhsa("train", "--data", str(d / "train.csv"), "--task-opt", f"test_path={d / 'test.csv'}",
                "--threads", str(THREADS["n"]), "--out", str(out / "trec-scratch"), "--force")
    note(out, "scratch", {"wall_s": wall, "load": load()})
    print(f"scratch text model on trec: {wall:.0f} s")


# ---------------------------------------------------------------------------------------------- report

def _rows(bench: dict) -> dict[tuple[str, str, str], dict]:
    """(model, runtime, precision) -> row (default-thread rows only)."""
    return {(r["model"], r["runtime"], r["precision"]): r for r in bench["rows"] if not r.get("variant")}


def report(out: Path) -> None:
    fig = json.loads((out / "figures.json").read_text()) if (out / "figures.json").is_file() else {}
    lines = []
    if (out / "sms-teacher").is_dir():
        m, imp = meta(out / "sms-teacher")["metrics"], meta(out / "sms-import")["metrics"]
        ok = m["test_acc"] >= 0.99 and m["test_macro_f1"] >= 0.97
        lines.append(f"sms fine-tuned (default command): test {100 * m['test_acc']:.2f} %, macro-F1 "
                     f"{m['test_macro_f1']:.4f} (>= 99.0 %, >= 0.97): {mark(ok)}; training {m['train_seconds']:.0f} s; "
                     f"import vs transformers max gap {imp.get('hf_max_gap', float('nan')):.2g} ({imp['hf_check']})")
    trec = out / "trec"
    if (trec / "bench.json").is_file():
        lines += _recipe_lines(trec, fig)
    if (out / "trec-scratch").is_dir():
        m = meta(out / "trec-scratch")["metrics"]
        lines.append(f"from-scratch mhsa text model on trec (text defaults): test {100 * m['test_acc']:.2f} %, "
                     f"macro-F1 {m['test_macro_f1']:.4f}, {m['params']:,} parameters, training {m['train_seconds']:.0f} s")
    print("\n".join(f"- {line}" for line in lines))


def _recipe_lines(trec: Path, fig: dict) -> list[str]:
    bench = json.loads((trec / "bench.json").read_text())
    rows = _rows(bench)
    t = meta(trec / "teacher")["metrics"]
    imp = meta(trec / "import")["metrics"]
    teacher_acc = rows[("teacher", "torch", "fp32")]["test_acc"]
    out = [f"import vs transformers: max gap {imp.get('hf_max_gap', float('nan')):.2g} ({imp['hf_check']}) "
           f"(<= 1e-4): {mark(imp.get('hf_max_gap', 1.0) <= 1e-4)}",
           f"trec teacher (default fine-tuning): test {100 * teacher_acc:.2f} %, macro-F1 {t['test_macro_f1']:.4f} "
           f"(>= 96.0 %): {mark(teacher_acc >= 0.96)}; training {t['train_seconds']:.0f} s (<= 600 s): "
           f"{mark(t['train_seconds'] <= 600)}"]
    if "recipe" in fig:
        w = fig["recipe"]["wall_s"]
        out.append(f"recipe wall time {w / 60:.1f} min (<= 30 min): {mark(w <= 1800)} "
                   f"({fig['recipe']['load_before']} -> {fig['recipe']['load_after']})")
    for name, what in (("pruned", "50 % heads + fine-tuning"), ("student", "3-layer student (KD)"),
                       ("deploy", "3 blocks distilled from the teacher with half its heads and 80 % of its neurons removed")):
        r = rows[(name, "torch", "fp32")]
        gap = pts(r["test_acc"], teacher_acc)
        out.append(f"{name} ({what}): test {100 * r['test_acc']:.2f} % ({gap:+.2f} pts{_ci(r)}, >= -1.0): {mark(gap >= -1.0)}; "
                   f"{r['params']:,} parameters, heads {r['heads']}")
    gate = json.loads((trec / "deploy-onnx" / "export.json").read_text()).get("int8_gate") or {}
    out += _deploy_lines(rows, teacher_acc, gate.get("chosen", "dynamic"))
    return out


def _ci(r: dict) -> str:
    """The bench's paired comparison with the teacher (same test rows): 95 % interval, rows gained / lost."""
    d = r.get("acc_delta_paired")
    return f"; 95 % CI {d['low_pts']:+.2f} to {d['high_pts']:+.2f}, rows +{d['gained']}/-{d['lost']}" if d else ""


def _limits(r: dict, fp32: dict, t_int8: dict, teacher_acc: float) -> tuple[float, dict[int, tuple[float, float]]]:
    """(points vs the teacher, {batch: (x the teacher's torch fp32, x faster than its ORT int8)})."""
    return pts(r["test_acc"], teacher_acc), {b: (p50(r, b) / p50(fp32, b), p50(t_int8, b) / p50(r, b)) for b in (1, 32)}


def _meets(gap: float, ratios: dict[int, tuple[float, float]]) -> bool:
    return gap >= -1.0 and all(f <= 0.15 and i >= 3 for f, i in ratios.values())


def _deploy_lines(rows: dict, teacher_acc: float, chosen: str | None) -> list[str]:
    """The recipe's deployable model (deploy-onnx's int8 file, the variant its gate kept on validation)
    against the three limits; then, for the record, every ORT row that meets all three on test."""
    fp32, t_int8 = rows[("teacher", "torch", "fp32")], rows[("teacher", "onnxruntime", "int8")]
    lines = [f"batch {b}: teacher torch fp32 {p50(fp32, b):.3g} ms, teacher ORT int8 {p50(t_int8, b):.3g} ms"
             for b in (1, 32)]
    r = rows[("deploy", "onnxruntime", INT8_PRECISION[chosen] if chosen else "fp32")]  # None: the gate kept none
    gap, ratios = _limits(r, fp32, t_int8, teacher_acc)
    lines.append(f"deployable = deploy-onnx's {'model.int8.onnx' if chosen else 'model.onnx'} (gate: {chosen or 'fp32'}, "
                 f"{r['name']}): test {100 * r['test_acc']:.2f} % ({gap:+.2f} pts{_ci(r)}, >= -1.0: {mark(gap >= -1.0)})")
    for b, (vs_fp32, vs_int8) in ratios.items():
        lines.append(f"deployable, batch {b}: {p50(r, b):.3g} ms = {vs_fp32:.3f}x the teacher's torch fp32 "
                     f"(<= 0.15: {mark(vs_fp32 <= 0.15)}), {vs_int8:.2f}x faster than its ORT int8 (>= 3: {mark(vs_int8 >= 3)})")
    lines.append(f"deployable, all three limits at once: {mark(_meets(gap, ratios))}")
    every = [x["name"] for (m, rt, p), x in rows.items() if rt == "onnxruntime" and _meets(*_limits(x, fp32, t_int8, teacher_acc))]
    lines.append("ORT rows meeting all three on test (not a choice; test never picks): " + (", ".join(every) or "none"))
    lines.append("accuracy per runtime: " + "; ".join(
        f"{m} {rt}/{p} {100 * x['test_acc']:.2f}" for (m, rt, p), x in rows.items()))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="sms,recipe,scratch,report")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "pretrained-targets")
    a = ap.parse_args()
    THREADS["n"] = a.threads
    steps = a.only.split(",")
    if {"sms", "recipe"} & set(steps) and not (a.model / "config.json").is_file():
        raise SystemExit(f"{a.model}: no model; fetch it with bash ../shared/models/get-minilm.sh")
    a.out.mkdir(parents=True, exist_ok=True)
    run = {"sms": lambda: sms(a.model, a.data, a.out), "recipe": lambda: recipe(a.model, a.data, a.out),
           "scratch": lambda: scratch(a.data, a.out), "report": lambda: report(a.out)}
    for step in steps:  # in the order given
        run[step]()


if __name__ == "__main__":
    main()
