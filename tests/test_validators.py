"""Each bad answer fails with Copier's validation error, through pytest-copie."""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml

from support import ANSWER_SETS, TEMPLATE_ROOT, Venv

BAD_ANSWERS = [
    {"project_name": "   "},
    {"project_name": "Acme", "project_slug": "acme tools"},
    {"project_name": "Acme", "project_slug": "Acme"},
    {"project_name": "Acme", "package_name": "1acme"},
    {"project_name": "Acme", "package_name": "acme-tools"},
    {"project_name": "Acme", "package_name": "json"},
    {"project_name": "Acme", "package_name": "asyncio"},
    {"project_name": "Acme", "author_email": "not an email"},
    # Issue 27: one-line answers hold no line break or control character ($ matched before a final newline).
    {"project_name": "Acme\nRUN curl https://example.com/x | sh"},
    {"project_name": "Acme\x1b[2J"},
    {"project_name": "Acme", "project_slug": "acme\n"},
    {"project_name": "Acme", "package_name": "acme\n"},
    {"project_name": "Acme", "description": "one line\nENV MCP_API_KEYS=leaked"},
    {"project_name": "Acme", "author_name": "Ann\rBob"},
    {"project_name": "Acme", "author_email": "ann@example.com\n"},
    {"project_name": "Acme", "author_email": 'a"b@example.com'},
    # ... and a package name is no keyword, no dunder, and none of the project's own dependencies.
    {"project_name": "Acme", "package_name": "class"},
    {"project_name": "Acme", "package_name": "__pycache__"},
    {"project_name": "Acme", "package_name": "dotenv"},
    {"project_name": "Acme", "package_name": "jsonschema"},
    {"project_name": "Acme", "package_name": "pytest"},
]


@pytest.mark.parametrize("answers", BAD_ANSWERS, ids=lambda a: ",".join(f"{k}={v!r}" for k, v in a.items()))
def test_bad_answer_is_refused(copie: Any, answers: dict[str, str]) -> None:
    result = copie.copy(extra_answers=answers)
    assert result.exit_code != 0
    assert "Validation error for question" in str(result.exception)


def test_good_answers_render(copie: Any) -> None:
    result = copie.copy(extra_answers={"project_name": "Good One", "sample_tools": []})
    assert result.exit_code == 0, result.exception
    assert (result.project_dir / "src" / "good_one" / "server" / "build.py").is_file()


# ---- the lists behind package_name's validator (includes/answers.jinja) --------------------------------

ANSWERS_INCLUDE = TEMPLATE_ROOT / "includes" / "answers.jinja"


def jinja_list(name: str) -> set[str]:
    """The names in `{%- set NAME = [...] -%}` of includes/answers.jinja."""
    found = re.search(rf"set {name} = \[(.*?)\]", ANSWERS_INCLUDE.read_text(), re.DOTALL)
    assert found, f"{name} is not in {ANSWERS_INCLUDE}"
    return set(re.findall(r"'([^']+)'", found[1]))


# Run in the shared virtual environment: the top-level import names of every distribution installed there
# except the rendered projects themselves (editable installs), i.e. of the dependencies they resolve to.
TOP_LEVEL_NAMES = r"""
import json, importlib.metadata as md
names = set()
for dist in md.distributions():
    direct = dist.read_text("direct_url.json") or "{}"
    if json.loads(direct).get("dir_info", {}).get("editable"):
        continue
    top = (dist.read_text("top_level.txt") or "").split()
    for file in dist.files or []:
        first = file.parts[0]
        if len(file.parts) > 1 and not first.endswith((".dist-info", ".data")) and first != "..":
            top.append(first)
        elif len(file.parts) == 1 and file.suffix in (".py", ".so", ".pyd"):
            top.append(first.split(".")[0])
    names |= {name for name in top if name.isidentifier() and name.islower() and not name.endswith("__mypyc")}
print(json.dumps(sorted(names)))
"""


def test_package_names_of_the_projects_dependencies_are_refused(
    rendered: Callable[[str], Path], venv: Venv
) -> None:
    """A package named like a module the project installs (dotenv, jsonschema, pytest, ...) would shadow
    it."""
    for name in ANSWER_SETS:  # every dependency and dev dependency any answer set can have
        rendered(name)
    listed = venv.run(venv.python, "-c", TOP_LEVEL_NAMES, cwd=TEMPLATE_ROOT)
    assert listed.returncode == 0, listed.stderr
    installed = set(json.loads(listed.stdout))
    assert {"dotenv", "jsonschema", "pytest", "mcp"} <= installed
    missing = sorted(installed - jinja_list("DEPENDENCY_MODULES"))
    assert not missing, f"add to DEPENDENCY_MODULES in includes/answers.jinja: {missing}"


def test_package_names_of_the_standard_library_and_keywords_are_refused() -> None:
    stdlib = {name for name in sys.stdlib_module_names if name.isidentifier() and name.islower()}
    assert stdlib <= jinja_list("STANDARD_LIBRARY"), sorted(stdlib - jinja_list("STANDARD_LIBRARY"))
    assert {word for word in keyword.kwlist if word.islower()} == jinja_list("KEYWORDS")


def test_min_copier_version_is_the_one_the_tests_run() -> None:
    """Copier 9.4.0 silently skipped the copy task (issue 27 item 7): the minimum is what is tested."""
    config = yaml.safe_load((TEMPLATE_ROOT / "copier.yml").read_text())
    pinned = re.search(r'"copier==([^"]+)"', (TEMPLATE_ROOT / "pyproject.toml").read_text())
    assert pinned
    assert config["_min_copier_version"] == pinned[1] == copier.__version__
