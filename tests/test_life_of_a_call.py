"""The rendered README's "The life of a call" names real places: every `file.py:name` it cites exists in
that render, so the list cannot drift from the code it describes."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from support import ANSWER_SETS, package_of

CITED = re.compile(r"`([\w/]+\.py):([\w.]+)`")


def defined(tree: ast.Module) -> set[str]:
    """Top-level names, and `Class.method` for methods, of a module."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            )
        if isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def life_of_a_call(readme: str) -> str:
    start = readme.index("### The life of a call")
    return readme[start : readme.index("\n### ", start + 1)]


@pytest.mark.parametrize("answers", list(ANSWER_SETS))
def test_every_place_the_life_of_a_call_cites_exists(rendered: Callable[[str], Path], answers: str) -> None:
    project = rendered(answers)
    package = project / "src" / package_of(project)[1]
    section = life_of_a_call((project / "README.md").read_text())
    cited = CITED.findall(section)
    assert len(cited) >= 12, section
    missing = []
    for file, name in cited:
        path = package / file
        if not path.is_file() or name not in defined(ast.parse(path.read_text())):
            missing.append(f"{file}:{name}")
    assert not missing, f"cited in README's 'The life of a call' but not in the {answers} render: {missing}"
