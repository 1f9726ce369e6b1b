"""Where a recipe runs: resume marks, the stage loop, the final bench.

:func:`run_recipe` validates (on every rank alike, see
:func:`mhsa_cli.distributed.agree`), checks the results folder, marks each stage
run or skip (:func:`stage_done`, :func:`mark_plan`), runs the stages in order
(:func:`_run_stage`), writes each finished stage's ``stage.json`` last, logs to
``run.log`` (:class:`_TeeProgress`) and copies the last bench stage's files to
the results root (:func:`_publish_final_bench`). Returns a :class:`RecipeResult`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import config as C
from .. import distributed as dist
from .. import environment as E
from ..errors import MhsaError, closest
from ..progress import NULL, Progress
from ..report import write_atomic, write_json
from ..stages import RUN, resolve
from .validate import RECIPE_FILE, STAGE_FILE, STAGE_TYPES, Plan, Stage, file_sha256, validate_recipe


def stage_files(folder: Path) -> dict[str, str]:
    """Every file a finished stage wrote (relative path -> SHA-256), except its stage.json."""
    return {p.relative_to(folder).as_posix(): file_sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != STAGE_FILE}


def measured_in(stage: Stage) -> dict[str, Any] | None:
    """A measuring stage's environment (torch build, CPU, threads, GPU); None for other stages."""
    if not STAGE_TYPES[stage.type].measures:
        return None
    cfg = stage.config
    return E.measurement_environment(getattr(cfg, "threads", 0), list(getattr(cfg, "devices", ["cpu"])))


def stage_state(stage: Stage, root: Path) -> str | None:
    """Why ``root/stage`` must be (re)run, or None when it holds a finished, intact run
    of the same hash (and, for a measuring stage, measured in this environment).

    The checks, in order: stage.json present and readable; same hash (settings,
    data file contents, mhsa version, inputs); every file recorded at the end of
    the run still there with the same SHA-256 (damaged weights are rebuilt, not
    skipped); the same measurement environment.
    """
    folder = root / stage.name
    try:
        done = json.loads((folder / STAGE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "no finished run"
    if not isinstance(done, dict) or done.get("hash") != stage.hash:
        return "settings, data or inputs changed"
    recorded = done.get("files")
    if not isinstance(recorded, dict) or not recorded:
        return "no record of its files"
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != digest:
            return f"{name} changed since it was written"
    if stage.environment is not None and done.get("environment") != stage.environment:
        return f"measurement environment changed ({E.changed_keys(done.get('environment') or {}, stage.environment)})"
    return None


def stage_done(stage: Stage, root: Path) -> bool:
    """True when ``root/stage`` holds a finished, intact run that can be skipped (:func:`stage_state`)."""
    return stage_state(stage, root) is None


def _check_results_folder(plan: Plan, force: bool) -> None:
    marker = plan.out / RECIPE_FILE
    if plan.out.exists() and not plan.out.is_dir():
        raise MhsaError(f"results path {plan.out} is a file, not a folder")
    if marker.is_file():
        try:
            other = json.loads(marker.read_text(encoding="utf-8")).get("name")
        except json.JSONDecodeError:
            other = None
        if other != plan.name and not force:
            raise MhsaError(f"{plan.out} holds results of recipe '{other}', not '{plan.name}'; "
                            "pass --force or choose another --out")
    elif plan.out.is_dir() and any(plan.out.iterdir()) and not force:
        raise MhsaError(f"{plan.out} exists and was not made by a recipe; pass --force or choose another --out")


def mark_plan(plan: Plan, rerun_from: str | None = None) -> None:
    """Set each stage's status and reason: skip if done and intact and no input reruns, else run.

    Args:
        plan: a validated plan.
        rerun_from: a stage name to rerun even if up to date; its dependants rerun
            with it, stages that do not depend on it are still skipped when done.

    Raises:
        MhsaError: ``rerun_from`` names no stage of the plan.
    """
    names = [s.name for s in plan.stages]
    if rerun_from is not None and rerun_from not in names:
        raise MhsaError(f"--rerun-from: no stage '{rerun_from}' in recipe '{plan.name}'"
                        f"{closest(rerun_from, names)}; stages: {', '.join(names)}")
    rerun: set[str] = set()
    for s in plan.stages:
        s.environment = measured_in(s)
        upstream = [i for i in s.inputs if i in rerun]  # in the stage's own order
        if s.name == rerun_from:
            s.reason = "--rerun-from"
        elif upstream:
            s.reason = f"input {', '.join(upstream)} reruns"
        else:
            s.reason = stage_state(s, plan.out) or ""
        s.status = "run" if s.reason else "skip"
        if s.reason:
            rerun.add(s.name)


class _TeeProgress(Progress):
    """Forwards to the user's progress and appends log lines to the run log."""

    def __init__(self, inner: Progress, log_path: Path):
        self.inner, self.log_path = inner, log_path

    def task(self, description: str, total: int | None = None):
        return self.inner.task(description, total)

    def log(self, message: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        self.inner.log(message)


@dataclass
class RecipeResult:
    """What :func:`run_recipe` returns: the plan with statuses, and the final bench."""

    plan: Plan
    dry_run: bool
    bench: Any = None
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)


def _prepare(cfg: C.RecipeConfig) -> Plan:
    plan = validate_recipe(cfg.recipe, cfg.set, cfg.out)
    _check_results_folder(plan, cfg.force)
    mark_plan(plan, cfg.rerun_from)
    return plan


def run_recipe(cfg: C.RecipeConfig, progress: Progress = NULL) -> RecipeResult:
    """Validate the recipe, then run its stages in order, skipping unchanged ones.

    Under torchrun, training stages (train, distill) run on every rank with DDP;
    the other stages run on rank 0 alone while the others wait, and only rank 0
    writes files.

    Raises:
        MhsaError: any validation error (nothing runs), or a stage's own bad input.
    """
    plan = dist.agree(_prepare, cfg)  # every rank sees the same plan (or the same error)
    if cfg.dry_run:
        return RecipeResult(plan, True)
    main = dist.is_main()
    if main:
        plan.out.mkdir(parents=True, exist_ok=True)
        write_json(plan.out / RECIPE_FILE, {"name": plan.name, "source": plan.source})
        write_atomic(plan.out / "recipe.resolved.yaml", yaml.safe_dump(plan.resolved, sort_keys=False))
    tee = _TeeProgress(progress, plan.out / "run.log") if main else NULL
    if main:  # run.log keeps every run's lines (the resume history): each run opens with a header
        with open(plan.out / "run.log", "a", encoding="utf-8") as f:
            f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} mhsa run {plan.source}: "
                    f"{sum(s.status == 'run' for s in plan.stages)} of {len(plan.stages)} stages to run\n")
    busy = E.busy_warning(flag="--set defaults.threads={n}") if any(s.status == "run" for s in plan.stages) else None
    if busy:
        tee.log(busy)
    start = time.perf_counter()
    for i, s in enumerate(plan.stages, 1):
        head = f"[{i}/{len(plan.stages)}] {s.name} ({s.type}{' from ' + ', '.join(s.inputs) if s.inputs else ''})"
        if s.status == "skip":
            tee.log(f"{head}: up to date, skipped")
            s.result = _load_result(s, plan.out)
            continue
        tee.log(f"{head}: running ({s.reason})")
        t0 = time.perf_counter()
        s.result = _run_stage(s, tee)
        s.seconds = time.perf_counter() - t0
        if main:  # written last: what the stage wrote (checked before a later skip) and where it measured
            folder = plan.out / s.name
            write_json(folder / STAGE_FILE, {"name": s.name, "type": s.type, "hash": s.hash, "inputs": s.inputs,
                                             "settings": s.settings, "seconds": s.seconds,
                                             "environment": s.environment, "files": stage_files(folder)})
        tee.log(f"{head}: done in {s.seconds:.1f}s")
    last_bench = next((s for s in reversed(plan.stages) if s.type == "bench"), None)
    files = _publish_final_bench(plan.out, last_bench) if main else []
    bench = last_bench.result if last_bench else None
    return RecipeResult(plan, False, bench, time.perf_counter() - start, files)


SCALES_OUT = ("train", "distill")  # stage types that run on every rank under torchrun


def plan_device(plan: Plan) -> str:
    """``cpu`` or ``cuda``: where the stages that run on every rank under torchrun (:data:`SCALES_OUT`)
    train, so that ``mhsa run`` starts a gloo group for a CPU recipe even on a machine with GPUs."""
    kinds = {dist.device_type(getattr(s.config, "device", "cpu")) for s in plan.stages if s.type in SCALES_OUT}
    return "cuda" if "cuda" in kinds else "cpu"


def recipe_device(cfg: C.RecipeConfig) -> str:
    """:func:`plan_device` of the recipe ``cfg`` names (validated; nothing runs).

    Raises:
        MhsaError: the recipe does not validate.
    """
    return plan_device(validate_recipe(cfg.recipe, cfg.set, cfg.out))


def _run_stage(stage: Stage, progress: Progress) -> Any:
    run = resolve(RUN[stage.type])
    if stage.type in SCALES_OUT:
        return run(stage.config, progress=progress)
    # rank 0 alone under torchrun; in one process on_rank0 just runs it
    return dist.on_rank0(lambda: run(stage.config, progress=progress), f"stage-{stage.name}-{stage.hash}")


def _load_result(stage: Stage, root: Path) -> Any:
    """A skipped bench stage's result, re-read from its bench.json (None otherwise)."""
    if stage.type != "bench":
        return None
    path = root / stage.name / "bench.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


BENCH_FILES = ("bench.json", "bench.csv", "bench.md", "bench.png")  # what a bench writes today
BENCH_GLOB = "bench.*"  # what the results root may hold of a bench (today's files and any later ones)


def _publish_final_bench(out: Path, last: Stage | None) -> list[str]:
    """Copy the last bench stage's files to the results root ``out`` (the run's report).

    Root bench files the new set lacks (e.g. a bench.png of an earlier run, now
    that matplotlib is missing) are removed once the new set is in place, so the
    root never mixes two runs' reports.
    """
    src = out / last.name if last is not None else None
    new = sorted(p.name for p in src.glob(BENCH_GLOB) if p.is_file()) if src else []
    for name in new:
        write_atomic(out / name, (src / name).read_bytes())
    for stale in out.glob(BENCH_GLOB):
        if stale.is_file() and stale.name not in new:
            stale.unlink()
    return [str(out / n) for n in new]


def clean_stage(root: Path, name: str) -> None:
    """Remove a stage folder (used by tests and by a user wanting a clean rerun)."""
    shutil.rmtree(root / name, ignore_errors=True)
