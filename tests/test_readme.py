"""The README opens with the main command and the test command; CI runs exactly the latter."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_opens_with_install_and_run_then_tests():
    main, tests = readme_commands()[:2]
    assert "pip install" in main and "mhsa run recipes/quickstart.yaml" in main
    assert "pip install" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == readme_commands()[1]


def test_readme_links_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for link in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (ROOT / link).exists(), link


def test_readme_gives_the_cpu_route_before_the_install_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    cpu = text.find("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert 0 <= cpu < text.find("```bash"), "the CPU wheel index must come before the first install command"
