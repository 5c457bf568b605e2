"""docs/guarantees.md names, for each promise, the tests that show it: every one must exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tests_of(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)
            and n.name.startswith("test_")}


def test_every_test_named_in_the_guarantees_exists():
    text = (ROOT / "docs" / "guarantees.md").read_text()
    missing, named = [], 0
    for cell in re.findall(r"`(tests/[^`]+)`", text):
        path, _, name = cell.partition("::")
        assert (ROOT / path).is_file(), f"{path} is named in docs/guarantees.md but does not exist"
        named += 1
        if name and name not in _tests_of(ROOT / path):
            missing.append(cell)
    for follow in re.findall(r"`::(test_\w+)`", text):   # `::name` continues the file named before it
        named += 1
        if not any(follow in _tests_of(p) for p in (ROOT / "tests").glob("test_*.py")):
            missing.append(follow)
    assert named > 30 and not missing, missing
