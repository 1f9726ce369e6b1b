"""registry (mhsa_cli/registry.py): lower floors own the registries; higher ones register into them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from mhsa_cli.registry import CHECKPOINT_KINDS, IMPORTANCE, Registry

PKG = Path(__file__).parent.parent / "mhsa_cli"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions, resolved to mhsa_cli.X names."""
    tree = ast.parse(path.read_text())
    package = "mhsa_cli." + ".".join(path.relative_to(PKG).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.rstrip(".").split(".")
            base = base[: len(base) - (node.level - 1)] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def module_imports(name: str) -> set[str]:
    """What module ``name`` (``X.py``, or every file of the package ``X/``) imports."""
    path = PKG / name
    if not path.exists() and path.suffix == ".py" and path.with_suffix("").is_dir():
        return set().union(*(imported_modules(f) for f in sorted(path.with_suffix("").rglob("*.py"))))
    return imported_modules(path)


@pytest.mark.parametrize("lower,higher", [
    ("config.py", "mhsa_cli.prune"), ("checkpoint.py", "mhsa_cli.quantize"), ("checkpoint.py", "mhsa_cli.prune"),
    ("registry.py", "mhsa_cli."), ("yamlsafe.py", "mhsa_cli.model"),
])
def test_lower_floors_do_not_import_higher_ones(lower, higher):
    found = sorted(m for m in module_imports(lower) if m.startswith(higher))
    assert not found, f"{lower} imports {found}"


def test_the_checker_sees_lazy_imports():  # the test above can fail: it catches a function-level import
    assert "mhsa_cli.tasks.TASKS" in module_imports("config.py")


def test_registries_are_filled_by_their_providers_on_first_read():
    code = ("import sys; from mhsa_cli.registry import IMPORTANCE, CHECKPOINT_KINDS; "
            "assert 'mhsa_cli.prune.importance' not in sys.modules; "
            "print(sorted(IMPORTANCE), sorted(CHECKPOINT_KINDS), 'mhsa_cli.quantize.kind' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent).stdout.strip()
    assert out == "['gradient', 'magnitude', 'random', 'taylor'] ['float', 'int8'] True"


def test_registry_refuses_a_name_taken_by_another_entry():
    reg: Registry[int] = Registry("thing")
    one = object()
    reg.register("a", one)
    reg.register("a", one)  # the same entry again (a module re-imported) is fine
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        reg.register("a", object())
    assert list(reg) == ["a"] and reg["a"] is one and len(reg) == 1


def test_prune_and_checkpoint_expose_the_same_registries():
    from mhsa_cli.checkpoint import KINDS
    from mhsa_cli.prune import IMPORTANCE as prune_importance

    assert prune_importance is IMPORTANCE and KINDS is CHECKPOINT_KINDS
