"""Tool-lock drift fails the project's own CI: its test suite and the `check` job of its workflow.

A rendered project is edited the way the README says to add a tool, without updating the lock; its own
pytest must then fail naming the tool, and `check` must say what `serve` really does about it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from support import Venv, git, package_of
from support.tooling import add_tool_module

UNLOCKED_TOOL = '''
from ..security.guard import Guard
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True)
    async def sneaky_report() -> str:
        """A tool nobody reviewed."""
        return "report"
'''


@contextmanager
def unlocked_tool(project: Path) -> Iterator[None]:
    """Add a tool the lock does not know, and take it out again (the rendered project is shared)."""
    module = add_tool_module(project, "sneaky", UNLOCKED_TOOL)
    try:
        yield
    finally:
        module.unlink()


def project_pytest(venv: Venv, project: Path) -> subprocess.CompletedProcess[str]:
    return venv.run(
        venv.python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_tool_lock.py",
        cwd=project,
        timeout=300,
    )


def test_the_projects_own_suite_fails_on_an_unlocked_tool(
    rendered: Callable[[str], Path], venv: Venv
) -> None:
    project = rendered("both")
    passing = project_pytest(venv, project)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    with unlocked_tool(project):
        failing = project_pytest(venv, project)
        command, _ = package_of(project)
        check = venv.run(venv.bin(command), "check", cwd=project, timeout=120)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "tool sneaky_report is served but not in the lock" in failing.stdout
    assert check.returncode == 1, check.stdout + check.stderr
    # check says what really happens: serve does not read the lock, so it starts.
    assert "the server will not start" not in check.stdout
    assert "`serve` still starts and serves the tools as they are now" in check.stdout
    assert f"{command} check --update-lock" in check.stdout


@pytest.mark.parametrize("answers", ["http_all", "oauth", "stdio"])
def test_the_rendered_ci_runs_check_on_a_fresh_checkout(
    answers: str, rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    project = rendered(answers)
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    steps = workflow["jobs"]["check"]["steps"]
    runs = [step for step in steps if "run" in step and step["run"] != "uv sync --locked"]
    command, _ = package_of(project)
    # An OAuth project's runner has no authorization server: check runs offline and says so.
    offline = answers == "oauth"
    assert runs[-1]["run"] == f"uv run {command} check" + (" --offline" if offline else "")
    # What the runner has: the committed files, no .env (git clone of the project the copy task committed).
    checkout = tmp_path / "checkout"
    subprocess.run([git(), "clone", "--quiet", str(project), str(checkout)], check=True, timeout=60)
    assert not (checkout / ".env").exists()
    for step in runs:
        argv = step["run"].split()
        assert argv[:3] == ["uv", "run", command], step
        result = venv.run(venv.bin(command), *argv[3:], cwd=checkout, env=step.get("env"), timeout=120)
        assert result.returncode == 0, f"{step['run']}:\n{result.stdout}{result.stderr}"
    if offline:
        assert (
            "authorization server: not asked (--offline): https://issuer.example's metadata" in result.stdout
        )
        assert result.stdout.rstrip().endswith(
            "configuration is valid offline (no other server was contacted; see the facts above)"
        )
    else:
        assert result.stdout.rstrip().endswith("\nconfiguration is valid")
    shutil.rmtree(checkout)
