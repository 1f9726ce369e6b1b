"""recipe (mhsa_cli/recipe/): whole-recipe validation with YAML lines, --set, dry runs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mhsa_cli.cli import app
from mhsa_cli.config import RecipeConfig, build_config
from mhsa_cli.errors import MhsaError
from mhsa_cli.recipe import run_recipe, validate_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
TINY = """\
name: tiny
defaults:
  seed: 0
  device: cpu
stages:
  - name: base
    type: train
    epochs: 1
    d_model: 16
    heads: 2
    d_ff: 32
    task_options: {n_train: 200, n_val: 100, n_test: 100}
  - name: pruned
    type: prune
    from: base
    ratio: 0.5
  - name: int8
    type: quantize
    from: pruned
  - name: bench
    type: bench
    compare: [base, pruned, int8]
    baseline: base
    batch_sizes: [2]
    min_time: 0.01
    min_repeats: 3
    warmup: 1
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe, tmp_path):
    overrides = {}
    if recipe.name == "text-csv.yaml":
        overrides = {"baseline.data": str(write(tmp_path, "text,label\na b,x\nc d,y\n", "d.csv"))}
    if recipe.name in ("bring-your-own.yaml", "pretrained-text.yaml"):  # validation checks the folder exists
        (tmp_path / "hf").mkdir()
        overrides = {"import.path": str(tmp_path / "hf"),
                     "import.data": str(write(tmp_path, "text,label\na b,x\nc d,y\n", "d.csv"))}
    plan = validate_recipe(recipe, overrides, tmp_path / "out")
    assert plan.stages and plan.stages[-1].type in ("bench", "prune")
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("#") and f"mhsa run recipes/{recipe.name}" in recipe.read_text()


def test_every_shipped_recipe_dry_runs_from_the_cli(tmp_path):
    for recipe in RECIPES:
        if recipe.name in ("text-csv.yaml", "bring-your-own.yaml", "pretrained-text.yaml"):  # the user's files
            continue
        result = CliRunner().invoke(app, ["run", str(recipe), "--dry-run", "--out", str(tmp_path / recipe.stem)])
        assert result.exit_code == 0, result.output
        assert "will run" in result.output
        assert not (tmp_path / recipe.stem).exists()


def stage_line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("edit,fragments", [
    (lambda t: t.replace("ratio: 0.5", "ratoi: 0.5"), ["unknown key 'ratoi' (did you mean 'ratio'?)", "line {ratoi}"]),
    (lambda t: t.replace("type: quantize", "type: quantise"), ["unknown stage type 'quantise'", "did you mean 'quantize'"]),
    (lambda t: t.replace("    from: base\n", "", 1), ["missing 'from'"]),
    (lambda t: t.replace("from: base", "from: int8"), ["'int8' is not an earlier stage"]),
    (lambda t: t.replace("from: base", "from: pruned"), ["refers to itself"]),
    (lambda t: t.replace("from: pruned", "from: int8"), ["refers to itself"]),
    (lambda t: t.replace("ratio: 0.5", "ratio: 1.5"), ["'ratio' must be < 1.0", "line {ratio: 1.5}"]),
    (lambda t: t.replace("epochs: 1", "epochs: many"), ["'epochs' must be an integer", "line {epochs: many}"]),
    (lambda t: t.replace("compare: [base, pruned, int8]", "compare: [base, nope]"), ["'nope' is not an earlier stage"]),
    (lambda t: t + "  - name: again\n    type: prune\n    from: int8\n", ["cannot take 'int8'", "prune before quantizing"]),
    (lambda t: t.replace("stages:", "stagez:"), ["unknown top-level key 'stagez'"]),
    (lambda t: t.replace("  seed: 0", "  sed: 0"), ["unknown key 'sed' in defaults"]),
    (lambda t: t.replace("    epochs: 1\n", "    epochs: 1\n    out: x\n"), ["'out' is set by the recipe runner"]),
    (lambda t: t.replace("name: tiny", "name: tiny\n  bad: [1"), ["malformed YAML", "r.yaml:2:6:"]),
])
def test_validation_errors_name_the_problem_and_line(tmp_path, edit, fragments):
    text = edit(TINY)
    path = write(tmp_path, text)
    with pytest.raises(MhsaError) as exc:
        validate_recipe(path, {}, tmp_path / "out")
    msg = str(exc.value)
    for f in fragments:
        if "{" in f:
            f = f.replace("{" + f[f.index("{") + 1: f.index("}")] + "}",
                          str(stage_line(text, f[f.index("{") + 1: f.index("}")])))
        assert f in msg, msg
    assert "\n" not in msg


def test_cli_error_is_one_line_and_nothing_runs(tmp_path):
    path = write(tmp_path, TINY.replace("ratio: 0.5", "ratoi: 0.5"))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_set_overrides_stage_and_nested_keys(tmp_path):
    path = write(tmp_path, TINY)
    plan = validate_recipe(path, {"pruned.ratio": 0.25, "base.task_options.n_train": 50, "defaults.seed": 3},
                           tmp_path / "out")
    by = {s.name: s for s in plan.stages}
    assert by["pruned"].config.ratio == 0.25
    assert by["base"].config.task_options["n_train"] == 50
    assert by["base"].config.seed == 3 and by["pruned"].config.seed == 3
    with pytest.raises(MhsaError, match="no stage or top-level key 'prunned'"):
        validate_recipe(path, {"prunned.ratio": 0.2}, tmp_path / "out")


def test_hash_changes_from_the_changed_stage_on(tmp_path):
    path = write(tmp_path, TINY)
    a = {s.name: s.hash for s in validate_recipe(path, {}, tmp_path / "o").stages}
    b = {s.name: s.hash for s in validate_recipe(path, {"pruned.ratio": 0.25}, tmp_path / "o").stages}
    assert a["base"] == b["base"]
    assert all(a[k] != b[k] for k in ("pruned", "int8", "bench"))


def test_folder_of_another_recipe_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "recipe.json").write_text(json.dumps({"name": "other"}))
    cfg = build_config(RecipeConfig, {"recipe": str(write(tmp_path, TINY)), "out": str(out)})
    with pytest.raises(MhsaError, match="recipe 'other'"):
        run_recipe(cfg)


@pytest.mark.slow
def test_tiny_pipeline_runs_then_resumes(tmp_path):
    """End to end: every file of results/README.md exists; a rerun skips; a change reruns k and later."""
    path, out = write(tmp_path, TINY), tmp_path / "out"
    first = run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    assert [s.status for s in first.plan.stages] == ["run"] * 4
    for f in ("recipe.json", "recipe.resolved.yaml", "run.log", "bench.json", "bench.csv", "bench.md"):
        assert (out / f).is_file(), f
    for stage in ("base", "pruned", "int8"):
        assert (out / stage / "checkpoint.json").is_file() and (out / stage / "stage.json").is_file()
    bench = json.loads((out / "bench.json").read_text())
    assert len(bench["rows"]) == 3
    base_id = json.loads((out / "base" / "checkpoint.json").read_text())["id"]

    again = run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    assert [s.status for s in again.plan.stages] == ["skip"] * 4

    changed = run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out),
                                                     "set": {"pruned.ratio": 0.25}}))
    assert [s.status for s in changed.plan.stages] == ["skip", "run", "run", "run"]
    assert json.loads((out / "base" / "checkpoint.json").read_text())["id"] == base_id
    heads = json.loads((out / "pruned" / "checkpoint.json").read_text())["model"]["heads"]
    assert sum(heads) == 3  # 25 % of 4 heads removed


EXPORT = TINY.split("  - name: pruned")[0] + """\
  - name: onnx
    type: export
    from: base
    reduce_range: true
    int8_methods: [dynamic]
  - name: bench
    type: bench
    compare: [base]
    runtime: [torch, onnxruntime]
    batch_sizes: [2]
    min_time: 0.01
    min_repeats: 3
    warmup: 1
"""


def test_export_stage_and_bench_runtimes_dry_run_then_run(tmp_path):
    path, out = write(tmp_path, EXPORT), tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "export" in result.output and not out.exists()
    plan = validate_recipe(path, {}, out)
    assert plan.stages[1].config.reduce_range is True and plan.stages[2].config.runtime == ["torch", "onnxruntime"]
    run = run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    meta = json.loads((out / "onnx" / "export.json").read_text())
    assert meta["source"]["path"] == str(out / "base") and meta["quantization"]["reduce_range"] is True
    assert meta["checks"]["parity"]["max_abs_gap"] <= 1e-4
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [(r["runtime"], r["precision"]) for r in rows] == [
        ("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    assert run.bench.fastest and (out / "onnx" / "stage.json").is_file()


@pytest.mark.parametrize("edit,fragments", [
    (lambda t: t.replace("    from: base\n    reduce_range", "    from: int8\n    reduce_range"),
     ["'int8' is not an earlier stage"]),
    (lambda t: t.replace("compare: [base]", "compare: [base, onnx]"),
     ["cannot take 'onnx': it makes export results", "runtime: [torch, onnxruntime]"]),
    (lambda t: t.replace("runtime: [torch, onnxruntime]", "runtime: [torch, ort]"),
     ["unknown value 'ort'", "choose from: torch, onnxruntime"]),
    (lambda t: t.replace("reduce_range: true", "reduce_range: maybe"), ["'reduce_range' must be true or false"]),
])
def test_export_recipe_errors(tmp_path, edit, fragments):
    with pytest.raises(MhsaError) as exc:
        validate_recipe(write(tmp_path, edit(EXPORT)), {}, tmp_path / "out")
    for f in fragments:
        assert f in str(exc.value)


def test_export_from_an_int8_stage_is_refused(tmp_path):
    text = TINY.split("  - name: bench")[0] + "  - name: onnx\n    type: export\n    from: int8\n"
    with pytest.raises(MhsaError, match="export.*cannot take 'int8'.*export its float parent"):
        validate_recipe(write(tmp_path, text), {}, tmp_path / "out")


def test_interrupted_stage_is_rerun(tmp_path, monkeypatch):
    """A stage without its stage.json marker (killed mid-way) is not considered done."""
    path, out = write(tmp_path, TINY.split("  - name: pruned")[0]), tmp_path / "out"
    run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    (out / "base" / "stage.json").unlink()
    plan = run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out), "dry_run": True})).plan
    assert plan.stages[0].status == "run"


def test_default_output_is_under_runs_not_the_committed_reference(tmp_path):
    """`mhsa run recipes/quickstart.yaml` must not write into the committed results/quickstart/."""
    from mhsa_cli.recipe import RUNS_ROOT

    plan = validate_recipe(RECIPES[[p.name for p in RECIPES].index("quickstart.yaml")], {})
    assert plan.out == Path("runs") / "recipes" / "quickstart" == RUNS_ROOT / "quickstart"
    assert all(Path(s.settings["out"]).parent == plan.out for s in plan.stages)
    ignored = (Path(__file__).parent.parent / ".gitignore").read_text().splitlines()
    assert "/runs/" in ignored


def test_final_bench_publish_removes_a_stale_file(tmp_path):
    """The results root gets the last bench's files as a set: an old bench.png not in it goes."""
    from mhsa_cli.recipe.run import _publish_final_bench
    from mhsa_cli.recipe.validate import Stage

    (tmp_path / "bench").mkdir()
    for name in ("bench.json", "bench.md"):
        (tmp_path / "bench" / name).write_text("new " + name)
        (tmp_path / name).write_text("old")
    (tmp_path / "bench.png").write_bytes(b"old figure")
    (tmp_path / "run.log").write_text("log")
    stage = Stage("bench", "bench", [], {}, None, "bench")
    files = _publish_final_bench(tmp_path, stage)
    assert sorted(Path(f).name for f in files) == ["bench.json", "bench.md"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["bench.json", "bench.md", "run.log"]
    assert (tmp_path / "bench.md").read_text() == "new bench.md"


BENCH_ONLY = """\
name: tiny
defaults: {seed: 0, device: cpu}
stages:
  - name: base
    type: train
    epochs: 1
    d_model: 16
    heads: 2
    d_ff: 32
    task_options: {n_train: 100, n_val: 50, n_test: 50}
  - name: other
    type: quantize
    from: base
    latency_time: 0
  - name: pruned
    type: prune
    from: base
    ratio: 0.5
  - name: bench
    type: bench
    compare: [base, pruned]
    batch_sizes: [1]
    min_time: 0.0
    min_repeats: 2
    warmup: 0
    threads: 1
"""


@pytest.fixture(scope="module")
def finished_once(tmp_path_factory):
    """One finished tiny run (train, quantize, prune, bench), shared read-only."""
    root = tmp_path_factory.mktemp("finished")
    path, out = write(root, BENCH_ONLY), root / "out"
    run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    return out


@pytest.fixture
def finished(tmp_path, finished_once):
    """A copy of the finished tiny run, its recipe, and a function that plans a rerun
    (hashes do not depend on the results folder, so the copy is as good as the original)."""
    import shutil

    path, out = write(tmp_path, BENCH_ONLY), tmp_path / "out"
    shutil.copytree(finished_once, out)

    def plan(**extra):
        cfg = build_config(RecipeConfig, {"recipe": str(path), "out": str(out), "dry_run": True, **extra})
        return {s.name: (s.status, s.reason) for s in run_recipe(cfg).plan.stages}
    return path, out, plan


def test_rerun_skips_an_intact_run_and_records_its_files(finished):
    _, out, plan = finished
    assert {k: v[0] for k, v in plan().items()} == dict.fromkeys(["base", "other", "pruned", "bench"], "skip")
    marker = json.loads((out / "base" / "stage.json").read_text())
    assert set(marker["files"]) == {"checkpoint.json", "model.safetensors"}
    import hashlib
    assert marker["files"]["model.safetensors"] == hashlib.sha256((out / "base" / "model.safetensors").read_bytes()).hexdigest()
    bench_marker = json.loads((out / "bench" / "stage.json").read_text())
    assert bench_marker["environment"]["threads"] == 1 and bench_marker["environment"]["torch"]
    assert marker["environment"] is None  # training is not a measurement of this machine


@pytest.mark.parametrize("damage,why", [
    (lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\0" * 8), "model.safetensors changed since it was written"),
    (lambda p: p.unlink(), "model.safetensors is missing"),
])
def test_damaged_weights_are_rebuilt_not_skipped(finished, damage, why):
    """#15: after a finished stage's weights are damaged, a rerun must not skip it (nor its dependants)."""
    path, out, plan = finished
    damage(out / "pruned" / "model.safetensors")
    status = plan()
    assert status["pruned"] == ("run", why)
    assert status["bench"] == ("run", "input pruned reruns")
    assert status["base"][0] == status["other"][0] == "skip"
    run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    assert plan()["pruned"][0] == "skip"  # rebuilt and recorded again


def test_changed_measurement_environment_remeasures_bench(finished, monkeypatch):
    """After a recorded environment change (another torch build), bench is re-measured, the rest skipped."""
    from mhsa_cli import environment

    path, out, plan = finished
    real = environment.measurement_environment
    monkeypatch.setattr(environment, "measurement_environment",
                        lambda *a, **k: {**real(*a, **k), "torch": "9.9.9+cu999"})
    status = plan()
    assert status["bench"][0] == "run" and "measurement environment changed (torch " in status["bench"][1]
    assert "-> 9.9.9+cu999" in status["bench"][1]
    assert all(status[n][0] == "skip" for n in ("base", "other", "pruned"))
    result = run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    assert [s.status for s in result.plan.stages] == ["skip", "skip", "skip", "run"]
    assert json.loads((out / "bench" / "stage.json").read_text())["environment"]["torch"] == "9.9.9+cu999"
    assert plan()["bench"][0] == "skip"


def test_rerun_from_reruns_the_stage_and_its_dependants_only(finished):
    _, _, plan = finished
    status = plan(rerun_from="pruned")
    assert status == {"base": ("skip", ""), "other": ("skip", ""), "pruned": ("run", "--rerun-from"),
                      "bench": ("run", "input pruned reruns")}
    assert {k: v[0] for k, v in plan(rerun_from="base").items()} == dict.fromkeys(["base", "other", "pruned", "bench"], "run")
    with pytest.raises(MhsaError, match="no stage 'prunde'.*did you mean 'pruned'"):
        plan(rerun_from="prunde")


def test_rerun_from_on_the_command_line(finished):
    path, out, _ = finished
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--dry-run", "--rerun-from", "other"])
    assert result.exit_code == 0, result.output
    assert result.output.count("will run") == 1 and "--rerun-from" in result.output
    bad = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--rerun-from", "nope"])
    assert bad.exit_code == 2 and bad.output.startswith("error: --rerun-from: no stage 'nope'")


def test_hash_covers_data_file_contents_and_version(tmp_path, monkeypatch):
    import mhsa_cli

    data = write(tmp_path, "text,label\na b,x\nc d,y\n", "d.csv")
    recipe = write(tmp_path, "name: t\nstages:\n  - name: base\n    type: train\n")
    first = validate_recipe(recipe, {"base.data": str(data)}, tmp_path / "o").stages[0].hash
    assert validate_recipe(recipe, {"base.data": str(data)}, tmp_path / "o").stages[0].hash == first
    data.write_text("text,label\na b,y\nc d,x\n", encoding="utf-8")  # same name and size, new labels
    changed = validate_recipe(recipe, {"base.data": str(data)}, tmp_path / "o").stages[0].hash
    assert changed != first
    monkeypatch.setattr(mhsa_cli, "__version__", "99.0")
    assert validate_recipe(recipe, {"base.data": str(data)}, tmp_path / "o").stages[0].hash != changed


def test_skipped_bench_renders_its_table_from_bench_json(finished):
    """A rerun with every stage up to date still prints the bench table (read back from bench.json)."""
    import io

    from rich.console import Console

    from mhsa_cli.report.recipe import render_recipe

    path, out, _ = finished
    result = run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    assert [s.status for s in result.plan.stages] == ["skip"] * 4 and isinstance(result.bench, dict)
    headers = [line for line in (out / "run.log").read_text().splitlines() if line.startswith("=== ")]
    assert len(headers) == 2 and headers[0].endswith(": 4 of 4 stages to run")
    assert headers[1].endswith(": 0 of 4 stages to run")  # each run's lines start with its own header
    console = Console(width=80, record=True, file=io.StringIO(), force_terminal=True)
    render_recipe(result, console)
    text = console.export_text()
    expected = json.loads((out / "bench.json").read_text())["rows"][1]["cells"][0]["latency_ms_p50"]
    from mhsa_cli.report.bench import _ms
    assert "base*" in text and _ms(expected) in text and "…" not in text
