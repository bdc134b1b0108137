"""Every answer set renders a clean project: no Jinja left, portable names, lint, types, its own tests."""

from __future__ import annotations

import ast
import py_compile
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from support import ANSWER_SETS, Venv, package_of

JINJA_LEFT = re.compile(r"\{\{-?\s*[A-Za-z_(]|\{%-?\s*[a-z]|\{#")
PORTABLE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
WINDOWS_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}


def project_files(project: Path) -> list[Path]:
    skip = {".git", ".venv", ".mypy_cache", ".ruff_cache", "__pycache__", ".pytest_cache"}
    return [p for p in project.rglob("*") if p.is_file() and not skip & set(p.relative_to(project).parts)]


@pytest.fixture(params=sorted(ANSWER_SETS), scope="module")
def project(request: pytest.FixtureRequest, rendered: Callable[[str], Path]) -> Path:
    return rendered(request.param)


def test_no_jinja_left_and_names_are_portable(project: Path) -> None:
    files = project_files(project)
    assert files
    for path in files:
        for part in path.relative_to(project).parts:
            assert PORTABLE_NAME.match(part), f"non-portable name: {part}"
            assert part.split(".")[0].lower() not in WINDOWS_RESERVED, part
        if path.suffix in {".py", ".toml", ".md", ".yml", ".yaml", ".txt", ".example", ".json", ".cfg", ""}:
            text = path.read_text()
            leftover = [line for line in text.splitlines() if JINJA_LEFT.search(line)]
            # GitHub workflow expressions (${{ ... }}) are meant to stay.
            leftover = [line for line in leftover if "${{" not in line]
            assert not leftover, f"Jinja left in {path.relative_to(project)}: {leftover[:3]}"


def test_every_python_file_compiles(project: Path) -> None:
    for path in project.rglob("*.py"):
        py_compile.compile(str(path), doraise=True)


def test_ruff_check_and_format_are_clean(project: Path, venv: Venv) -> None:
    lint = venv.run(venv.bin("ruff"), "check", "--no-cache", ".", cwd=project)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = venv.run(venv.bin("ruff"), "format", "--check", "--no-cache", ".", cwd=project)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict_is_clean(project: Path, venv: Venv) -> None:
    result = venv.run(venv.bin("mypy"), "--cache-dir", str(project / ".mypy_cache"), cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bandit_finds_nothing(project: Path, venv: Venv) -> None:
    result = venv.run(venv.bin("bandit"), "-q", "-c", "pyproject.toml", "-r", "src", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


# A developer's shell may export any of these; the project's tests must not see them (issue 12 item 11).
SHELL_MCP_VARIABLES = {
    "MCP_UPSTREAM_API_KEY": "mcp_from-the-shell-0123456789",
    "MCP_API_KEYS": "mcp_from-the-shell-0123456789",
    "MCP_TRANSPORT": "http",
    "MCP_RATE_LIMIT": "1/hour",
    "MCP_SECURITY_EVENTS_URL": "redis://127.0.0.1:1/0",
    "MCP_RATE_LIMTI": "5/minute",
}


def test_the_projects_own_tests_pass(project: Path, venv: Venv) -> None:
    result = venv.run(
        venv.python,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        cwd=project,
        env=SHELL_MCP_VARIABLES,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_stdio_projects_have_no_http_code(rendered: Callable[[str], Path]) -> None:
    project = rendered("stdio")
    text = "\n".join(p.read_text() for p in (project / "src").rglob("*.py"))
    for marker in ("starlette", "uvicorn", "def build_app"):
        assert marker not in text, marker
    pyproject = (project / "pyproject.toml").read_text()
    assert "uvicorn" not in pyproject and "starlette" not in pyproject


def test_env_file_is_private_and_untracked(rendered: Callable[[str], Path]) -> None:
    project = rendered("http_all")
    env = project / ".env"
    assert env.stat().st_mode & 0o777 == 0o600
    answers = (project / ".copier-answers.yml").read_text()
    key = next(
        line.split("=", 1)[1] for line in env.read_text().splitlines() if line.startswith("MCP_API_KEYS=")
    )
    assert key not in answers
    assert ".env" in (project / ".gitignore").read_text().splitlines()


def test_env_example_documents_every_setting(project: Path, venv: Venv) -> None:
    package = next((project / "src").iterdir()).name
    listed = venv.run(
        venv.python,
        "-c",
        f"from {package}.settings import Settings; print(' '.join(Settings.model_fields))",
        cwd=project,
    )
    assert listed.returncode == 0, listed.stderr
    fields = {f"MCP_{name.upper()}" for name in listed.stdout.split()}
    example = {
        line.split("=", 1)[0]
        for line in (project / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert fields == example, f"missing from .env.example: {fields - example}; unknown: {example - fields}"


def test_hostile_answers_land_as_data(rendered: Callable[[str], Path], venv: Venv) -> None:
    """Issue 27 items 1-3: each answer reads back exactly from every syntax it lands in, and runs nothing."""
    project = rendered("hostile")
    answers = ANSWER_SETS["hostile"]
    command, package = package_of(project)
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert meta["description"] == answers["description"]
    assert meta["authors"] == [{"name": answers["author_name"], "email": answers["author_email"]}]
    script = (
        f"import {package}, {package}.answers as p; print(repr({package}.__doc__)); print(p.PROJECT_NAME)"
    )
    imported = venv.run(venv.python, "-c", script, cwd=project)
    assert imported.returncode == 0, imported.stderr
    doc, name = imported.stdout.splitlines()
    assert " ".join(ast.literal_eval(doc).split()) == f"{answers['project_name']}: {answers['description']}"
    assert name == answers["project_name"]
    assert not (project / "PWNED").exists()
    # Comments stay comments: the name is on comment lines only.
    for file in ("Dockerfile", ".env.example"):
        lines = [line for line in (project / file).read_text().splitlines() if "Hostile" in line]
        assert lines and all(line.startswith("# ") for line in lines), (file, lines)
    # Markdown shows the text as typed: no HTML, no link, no code span.
    readme = (project / "README.md").read_text()
    assert readme.startswith('# Acme "Hostile" \\\\ Tools \\<b\\>\\*ü\\*\\</b\\> \\`x\\` \\# $HOME\n')
    assert "[link](" not in (project / "SECURITY.md").read_text()
    checked = venv.run(venv.bin(command), "check", "--offline", cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert answers["project_name"] in checked.stdout
