"""yamlsafe (mhsa_cli/yamlsafe.py): budgets, tags and bytes of recipe YAML, each refused in one line
with file:line:column, before anything runs or is written."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from mhsa_cli import yamlsafe
from mhsa_cli.cli import app
from mhsa_cli.config import parse_assignments
from mhsa_cli.errors import MhsaError
from mhsa_cli.recipe import load_recipe_text, validate_recipe
from tests.conftest import assert_one_line_error

GOOD = """\
name: tiny
defaults: &d
  seed: 0
  device: cpu
stages:
  - name: base
    type: train
    epochs: 1
    task_options: {n_train: 50, n_val: 20, n_test: 20}
"""

# a "billion laughs" file: 9 levels of 9 aliases = 9**9 values expanded, under 1 KB
LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))


def run_cli(tmp_path, text: str | bytes, *extra: str):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), *extra])
    assert not out.exists()
    return result


def test_alias_bomb_refused_fast_with_position(tmp_path):
    assert len(LAUGHS) < 1024
    start = time.perf_counter()
    result = run_cli(tmp_path, LAUGHS)
    assert time.perf_counter() - start < 5
    assert_one_line_error(result, "recipe.yaml:", "aliases expanded")


def test_alias_budget_counts_expanded_values():
    # 4 aliases of a 3-item list: 1 root map + 2 keys... counted expanded: small, accepted
    data = yamlsafe.load("a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n")
    assert data["b"] == [[1, 2, 3]] * 4
    budget = yamlsafe.MAX_NODES
    try:
        yamlsafe.MAX_NODES = 20  # 1 map + 2 keys + a (4) + b (1 + 4 * 4) = 24 > 20
        with pytest.raises(MhsaError, match=r"^<string>:2:\d+: YAML too large"):
            yamlsafe.load("a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n")
        yamlsafe.MAX_NODES = 24
        yamlsafe.load("a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n")
    finally:
        yamlsafe.MAX_NODES = budget


@pytest.mark.parametrize("text,fragment", [
    ("[" * 5000 + "]" * 5000, "recipe.yaml:1:65: YAML nested deeper than 64"),
    ("a: " + "{b: " * 200 + "1" + "}" * 200, "nested deeper than 64"),
    # depth made by aliases: each anchor is 40 deep, the alias puts it 40 deeper again
    ("a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40, "recipe.yaml:2:44: YAML nested deeper"),
])
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path, text, fragment):
    assert_one_line_error(run_cli(tmp_path, text), fragment)


def test_non_utf8_byte_names_its_position(tmp_path):
    text = GOOD.encode().replace(b"name: base", b"name: b\xe9se")
    assert_one_line_error(run_cli(tmp_path, text), "recipe.yaml:6:12: not UTF-8 text (byte 0xe9)")


@pytest.mark.parametrize("edit,fragment", [
    (lambda t: t.replace("epochs: 1", "epochs: !!python/object/apply:os.getcwd []"),
     "recipe.yaml:8:13: YAML tag 'tag:yaml.org,2002:python/object/apply:os.getcwd' is not allowed"),
    (lambda t: t.replace("    epochs: 1", "    !!python/name:os.getcwd epochs: 1"),
     "recipe.yaml:8:5: YAML tag 'tag:yaml.org,2002:python/name:os.getcwd' is not allowed"),
    (lambda t: t.replace("seed: 0", "seed: !seed 0"), "recipe.yaml:3:9: YAML tag '!seed'"),
    (lambda t: t.replace("seed: 0", "seed: !!binary AAAA"), "YAML tag 'tag:yaml.org,2002:binary'"),
    (lambda t: t.replace("seed: 0", "seed: 0\n  x: \x07"), "recipe.yaml:4:6: malformed YAML: control character U+0007"),
])
def test_non_standard_tags_and_characters_refused(tmp_path, edit, fragment):
    assert_one_line_error(run_cli(tmp_path, edit(GOOD)), fragment)


def test_size_budget(tmp_path):
    text = GOOD + "# " + "x" * yamlsafe.MAX_BYTES + "\n"
    assert_one_line_error(run_cli(tmp_path, text), "file too large for a recipe")


def test_anchors_and_merge_keys_still_work(tmp_path):
    text = GOOD + "  - name: base2\n    type: train\n    <<: {epochs: 2, seed: 1}\n"
    data, lines = load_recipe_text(text, "r.yaml")
    assert data["stages"][1]["epochs"] == 2 and data["stages"][1]["seed"] == 1
    assert data["defaults"] == {"seed": 0, "device": "cpu"}
    # a date stays text (no timestamp objects in recipes)
    assert load_recipe_text("name: 2024-01-01\n", "r.yaml")[0]["name"] == "2024-01-01"
    path = tmp_path / "r.yaml"
    path.write_text(text)
    plan = validate_recipe(path, {}, tmp_path / "o")
    assert [s.config.epochs for s in plan.stages] == [1, 2]


def test_set_values_use_the_same_budgets():
    assert parse_assignments(["a=[1, 2]", "b=x: y: z"]) == {"a": [1, 2], "b": "x: y: z"}  # not YAML: text
    with pytest.raises(MhsaError, match="YAML tag 'tag:yaml.org,2002:python/name:os.system' is not allowed"):
        parse_assignments(["a=!!python/name:os.system"])
    with pytest.raises(MhsaError, match="nested deeper"):
        parse_assignments(["a=" + "[" * 100 + "]" * 100])
