"""Targets of the "bring your own encoder" issue on a BERT-shaped model, side by side in one run.

Run (from the repository root; needs ``transformers`` for the source model, else ``--direct``)::

    python benchmarks/bert_targets.py                    # 1 thread, batch 1, seq 128
    python benchmarks/bert_targets.py --threads 2 --batches 1,8 --min-time 4

The model: BERT-base's shape (12 layers, 768 wide, 12 heads, d_ff 3072, vocab
30,522, 2 classes) with random weights (timing does not depend on them). It is
made by ``transformers`` (``BertForSequenceClassification``, seed 0), saved with
safetensors and brought in by ``mhsa import`` (so the import path is what is
timed), and its logits are checked against transformers' forward on a padded
batch. ``--direct`` builds the same architecture with :class:`ModelConfig`'s
BERT switches instead (no transformers needed, no parity check).

Compared, timed round-robin by ``mhsa bench``'s timer
(:func:`mhsa_cli.bench.measure_interleaved`: warm-up, eval, inference mode) on
the same random input (seq 128, no padding), at a fixed thread count:

* ``fp32``: the imported model in torch eager;
* ``int8``: torch dynamic int8 (every Linear; the ``mhsa quantize`` backend);
* ``half-heads``: half the heads of every layer physically removed (heads 0-5;
  random weights make importance meaningless), fp32;
* ``half-heads+int8``: that model quantized;
* ``ort-fp32``, ``ort-int8``: the imported model exported to ONNX by ``mhsa export``'s
  functions and run by ONNX Runtime, fp32 and ORT dynamic int8 (``--no-ort`` skips them;
  the ONNX logits are checked against torch first).

Ratios are medians of per-round ratios to ``fp32`` (robust to a busy machine);
sizes are the safetensors bytes of each model's weights (ONNX: the file).
Results go to ``<workdir>/bert_targets.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mhsa_cli import quantize as Q  # noqa: E402
from mhsa_cli.bench import measure_interleaved  # noqa: E402
from mhsa_cli.checkpoint import META, load_model  # noqa: E402
from mhsa_cli.environment import environment  # noqa: E402
from mhsa_cli.model import ModelConfig, build_model  # noqa: E402
from mhsa_cli.prune.surgery import remove_heads  # noqa: E402

SHAPE = dict(layers=12, d_model=768, heads=12, d_ff=3072, vocab=30522, positions=512, classes=2)


def hf_model(folder: Path) -> Any:
    """BERT-base-shaped BertForSequenceClassification (seed 0), saved once to ``folder``."""
    import transformers

    cfg = transformers.BertConfig(num_labels=SHAPE["classes"])  # defaults are BERT-base
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    if not (folder / "model.safetensors").is_file():
        model.save_pretrained(folder)
    return model


def imported(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    """The mhsa model (imported, or built directly) and how it was made (with the parity gap)."""
    if args.direct:
        c = ModelConfig("tokens", SHAPE["positions"], SHAPE["classes"], vocab_size=SHAPE["vocab"],
                        d_model=SHAPE["d_model"], heads=[SHAPE["heads"]] * SHAPE["layers"], head_dim=64,
                        d_ff=SHAPE["d_ff"], dropout=0.1, pooling="first", norm="post", embed_norm=True,
                        final_norm=False, type_vocab_size=2, pooler="tanh", ln_eps=1e-12)
        return build_model(c, seed=0).eval(), {"source": "ModelConfig (direct)"}
    from mhsa_cli.config import ImportConfig, build_config
    from mhsa_cli.imports import import_hf

    hf = hf_model(args.workdir / "hf")
    out = args.workdir / "imported"
    if not (out / META).is_file():
        import_hf(build_config(ImportConfig, {"path": str(args.workdir / "hf"), "out": str(out), "force": True}))
    model = load_model(out)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1000, SHAPE["vocab"], (4, args.seq), generator=g)  # (4, T)
    x[1, 40:], x[2, 100:] = 0, 0  # padded rows
    with torch.inference_mode():
        gap = float((model(x) - hf(input_ids=x, attention_mask=(x != 0).long()).logits).abs().max())
    return model, {"source": "transformers BertForSequenceClassification -> mhsa import", "parity_max_abs": gap}


def safetensors_bytes(state: dict[str, torch.Tensor]) -> int:
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in state.items()}))


def variants(model: nn.Module, engine: str) -> dict[str, nn.Module]:
    """fp32, int8, 50 %-heads fp32 and 50 %-heads + int8 versions of ``model``."""
    backend = Q.BACKENDS["torch-ao"]
    half = {layer: list(range(h // 2)) for layer, h in enumerate(model.heads)}
    pruned = remove_heads(model, half).eval()  # checks parity with the head-gated original
    out = {"fp32": model, "half-heads": pruned}
    for name, m in (("int8", model), ("half-heads+int8", pruned)):
        out[name] = backend.quantize(copy.deepcopy(m), engine, False, Q.linear_names(m)).eval()
    return {k: out[k] for k in ("fp32", "int8", "half-heads", "half-heads+int8")}


def ort_models(model: nn.Module, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """ORT fp32 and int8 callables of ``model`` (exported once to the workdir) and their facts."""
    from mhsa_cli.export.onnx import quantize_onnx, to_onnx
    from mhsa_cli.runtimes.onnxruntime import OrtCall, make_session

    fp32, int8 = args.workdir / "model.onnx", args.workdir / "model.int8.onnx"
    x = torch.randint(1000, SHAPE["vocab"], (2, args.seq), generator=torch.Generator().manual_seed(3))
    if not int8.is_file():
        to_onnx(model, x, fp32, 17)
        quantize_onnx(fp32, int8, reduce_range=False, per_channel=False)
    calls = {f"ort-{p}": OrtCall(make_session(f, args.threads), np.int64) for p, f in (("fp32", fp32), ("int8", int8))}
    with torch.inference_mode():
        gap = float((calls["ort-fp32"](x) - model(x)).abs().max())
    return calls, {"ort_fp32_parity_max_abs": gap, "bytes": {"ort-fp32": fp32.stat().st_size,
                                                             "ort-int8": int8.stat().st_size}}


def sizes(models: dict[str, Any], ort_bytes: dict[str, int]) -> dict[str, int]:
    backend = Q.BACKENDS["torch-ao"]
    return {n: ort_bytes[n] if n in ort_bytes else
            safetensors_bytes(backend.state(m) if n.endswith("int8") else dict(m.state_dict()))
            for n, m in models.items()}


def time_batch(models: dict[str, nn.Module], b: int, args: argparse.Namespace) -> dict[str, Any]:
    """p50 ms per model and the median per-round ratio to fp32 at batch ``b``."""
    x = torch.randint(1000, SHAPE["vocab"], (b, args.seq), generator=torch.Generator().manual_seed(2))
    with Q.quiet():
        st = measure_interleaved({n: (m, x) for n, m in models.items()}, "cpu", args.min_time / len(models),
                                 args.min_repeats, args.warmup)
    cell: dict[str, Any] = {"rounds": st["fp32"].repeats}
    for n in models:
        cell[n] = {"p50_ms": st[n].latency_ms_p50, "p90_ms": st[n].latency_ms_p90,
                   "ratio": statistics.median(a / f for a, f in zip(st[n].per_round_ms(), st["fp32"].per_round_ms()))}
    return cell


def render(result: dict[str, Any]) -> None:
    from rich.console import Console

    from mhsa_cli.report import human_bytes, table

    con = Console()
    size0 = result["sizes"]["fp32"]
    for b, cell in result["latency"].items():
        rows = [(n, f"{c['p50_ms']:.1f}", f"{c['p90_ms']:.1f}", f"{c['ratio']:.2f}x",
                 f"{1 / c['ratio']:.2f}x", human_bytes(result["sizes"][n]), f"{result['sizes'][n] / size0:.2f}x")
                for n, c in cell.items() if n != "rounds"]
        con.print(table(f"BERT-base shape, seq {result['seq']}, batch {b}, {result['threads']} thread(s), "
                        f"{cell['rounds']} rounds", ["model", "p50 ms", "p90 ms", "latency / fp32", "speedup",
                                                     "size", "size / fp32"], rows))
    con.print(f"source: {result['made']}; engine {result['engine']}; load before/after "
              f"{result['load_before']} / {result['load_after']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1", help="comma-separated batch sizes")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--min-time", type=float, default=6.0, help="seconds per batch size, shared by the models")
    p.add_argument("--min-repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--engine", default="auto")
    p.add_argument("--direct", action="store_true", help="build the model with ModelConfig (no transformers)")
    p.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime rows")
    p.add_argument("--workdir", type=Path, default=Path("runs/bert_targets"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    model, made = imported(args)
    engine = Q.resolve_engine(args.engine)
    ort, ort_facts = ({}, {"bytes": {}}) if args.no_ort else ort_models(model, args)
    made.update({k: v for k, v in ort_facts.items() if k != "bytes"})
    with Q.use_engine(engine):
        models = {**variants(model, engine), **ort}
        result = {"made": made, "engine": engine, "threads": args.threads, "seq": args.seq, "shape": SHAPE,
                  "heads": {n: m.heads for n, m in models.items() if hasattr(m, "heads")},
                  "sizes": sizes(models, ort_facts["bytes"]),
                  "latency": {b: time_batch(models, b, args) for b in map(int, args.batches.split(","))}}
    result.update(load_before=[round(v, 2) for v in load_before], load_after=[round(v, 2) for v in os.getloadavg()],
                  seconds=time.perf_counter() - t0, environment=environment())
    (args.workdir / "bert_targets.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    render(result)


if __name__ == "__main__":
    main()
