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
    if recipe.name == "bring-your-own.yaml":  # validation only checks that the folder exists
        (tmp_path / "hf").mkdir()
        overrides = {"import.path": str(tmp_path / "hf"),
                     "import.data": str(write(tmp_path, "text,label\na b,x\nc d,y\n", "d.csv"))}
    plan = validate_recipe(recipe, overrides, tmp_path / "out")
    assert plan.stages and plan.stages[-1].type in ("bench", "prune")
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("#") and f"mhsa run recipes/{recipe.name}" in recipe.read_text()


def test_every_shipped_recipe_dry_runs_from_the_cli(tmp_path):
    for recipe in RECIPES:
        if recipe.name in ("text-csv.yaml", "bring-your-own.yaml"):  # need the user's files
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
    (lambda t: t.replace("name: tiny", "name: tiny\n  bad: [1"), ["malformed YAML", "line"]),
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


def test_interrupted_stage_is_rerun(tmp_path, monkeypatch):
    """A stage without its stage.json marker (killed mid-way) is not considered done."""
    path, out = write(tmp_path, TINY.split("  - name: pruned")[0]), tmp_path / "out"
    run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out)}))
    (out / "base" / "stage.json").unlink()
    plan = run_recipe(build_config(RecipeConfig, {"recipe": str(path), "out": str(out), "dry_run": True})).plan
    assert plan.stages[0].status == "run"
