"""The rendered project reads like a library its user would choose: in every answer set, no module over
400 lines, no function over 60, and the guard's `Guard` a thin face (under 200 lines)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from support import ANSWER_SETS, package_of

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_GUARD_LINES = 200


def too_long(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(package)
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{where}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if not isinstance(node, ast.ClassDef) and length > MAX_FUNCTION_LINES:
                found.append(f"{where}:{node.lineno} {node.name}: {length} lines")
            if isinstance(node, ast.ClassDef) and node.name == "Guard" and length > MAX_GUARD_LINES:
                found.append(f"{where}:{node.lineno} Guard: {length} lines")
    return found


@pytest.mark.parametrize("answers", list(ANSWER_SETS))
def test_no_module_function_or_guard_is_too_long(rendered: Callable[[str], Path], answers: str) -> None:
    project = rendered(answers)
    package = project / "src" / package_of(project)[1]
    assert (package / "security" / "guard" / "core.py").is_file()
    assert not too_long(package), too_long(package)


def test_the_rule_catches_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long() -> None:\n{body}\n")
    assert too_long(tmp_path) == [f"long.py:1 long: {MAX_FUNCTION_LINES + 1} lines"]
