"""The generator's own lifecycle is attack surface too (issue 27): the copy task, `check`, updates.

The answers themselves are tested in test_validators.py (what is refused) and test_render.py (the hostile
answer set: what is accepted lands as data).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from support import TEMPLATE_ROOT, Venv, package_of

HOOKS = TEMPLATE_ROOT / "hooks"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, check=False, capture_output=True, text=True, timeout=300)


def git(cwd: Path, *args: str) -> str:
    result = run(["git", *args], cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def copy_task(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """hooks/post_copy.py as copier.yml's task runs it, in `project`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "COPIER_", "MCP_"))}
    full.update({"MCP_TEMPLATE_SKIP_LOCK": "1", "HOME": str(project.parent), "GIT_CONFIG_NOSYSTEM": "1"})
    full.update(env or {})
    command = [sys.executable, str(HOOKS / "post_copy.py"), "--command=acme", "--package=acme"]
    command += ["--author-name=Ada", "--author-email=ada@example.com", *args]
    return run(command, project, full)


def copied_project(root: Path) -> Path:
    """A destination as Copier leaves it before the task: a few rendered files."""
    project = root / "project"
    (project / "src" / "acme").mkdir(parents=True)
    (project / "README.md").write_text("# Acme\n")
    (project / ".gitignore").write_text(".env\n")
    (project / "src" / "acme" / "cli.py").write_text("")
    (project / ".copier-answers.yml").write_text("_src_path: gh:example/template\n")
    return project


# ---- item 5: the first commit holds what the copy made, and the project's hooks run -------------------

FOREIGN = (".aws/credentials", "service-account.json", "id_ed25519", ".npmrc", "notes/todo.txt")


def test_copy_task_commits_only_what_the_copy_rendered(tmp_path: Path) -> None:
    project = copied_project(tmp_path)
    for name in FOREIGN:  # what was in the destination before `copier copy`
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("secret\n")
    result = copy_task(project)
    assert result.returncode == 0, result.stderr
    committed = set(git(project, "ls-files").split())
    assert committed == {"README.md", ".gitignore", "src/acme/cli.py", ".copier-answers.yml"}
    for name in FOREIGN:
        assert name in result.stdout, result.stdout  # named, so the user can decide
    assert "not committed" in result.stdout


def test_a_fresh_copy_commits_every_file_it_rendered(rendered: Callable[[str], Path]) -> None:
    """The task knows the template's file names: nothing rendered is left out of the first commit."""
    for name in ("http_all", "stdio", "hostile"):
        project = rendered(name)
        assert git(project, "status", "--porcelain", "--untracked-files=all") == "", name
        assert "tools.lock.json" in git(project, "ls-files")


def test_copy_task_runs_the_projects_git_hooks(tmp_path: Path) -> None:
    """No --no-verify: a pre-commit hook of the user's (core.hooksPath) runs on the first commit too."""
    project = copied_project(tmp_path)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "pre-commit").write_text(f"#!/bin/sh\ntouch {tmp_path / 'hook-ran'}\n")
    (hooks / "pre-commit").chmod(0o755)
    config = tmp_path / "gitconfig"
    config.write_text(f"[core]\n\thooksPath = {hooks}\n[user]\n\tname = U\n\temail = u@example.com\n")
    result = copy_task(project, env={"GIT_CONFIG_GLOBAL": str(config)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hook-ran").exists()
    assert "first commit" in result.stdout


# ---- item 6: an existing .env is kept, and says so; `check` refuses one others can read ----------------


def test_copy_task_says_it_kept_an_existing_env(tmp_path: Path) -> None:
    project = copied_project(tmp_path)
    (project / ".env").write_text("MCP_API_KEYS=old\n")
    (project / ".env").chmod(0o644)
    result = copy_task(project)
    assert result.returncode == 0, result.stderr
    assert (project / ".env").read_text() == "MCP_API_KEYS=old\n"
    assert "Kept the existing .env" in result.stdout
    assert "chmod 600 .env" in result.stdout


def test_check_refuses_an_env_file_others_can_read(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(rendered("both"), project, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    command, _ = package_of(project)
    assert run([venv.bin(command), "check", "--offline"], project).returncode == 0
    (project / ".env").chmod(0o644)
    refused = run([venv.bin(command), "check", "--offline"], project)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "chmod 600 .env" in refused.stdout
