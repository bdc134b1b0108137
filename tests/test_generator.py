"""The generator's own lifecycle is attack surface too (issue 27): the copy task, `check`, updates.

The answers themselves are tested in test_validators.py (what is refused) and test_render.py (the hostile
answer set: what is accepted lands as data).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from support import TEMPLATE_ROOT, Venv, package_of

HOOKS = TEMPLATE_ROOT / "hooks"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, check=False, capture_output=True, text=True, timeout=300)


def git(cwd: Path, *args: str) -> str:
    result = run(["git", *args], cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def copy_task(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """hooks/post_copy.py as copier.yml's task runs it, in `project`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "COPIER_", "MCP_"))}
    full.update({"MCP_TEMPLATE_SKIP_LOCK": "1", "MCP_TEMPLATE_SKIP_HOOKS": "1", "HOME": str(project.parent)})
    full["GIT_CONFIG_NOSYSTEM"] = "1"
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


def test_copy_task_installs_the_pre_commit_hooks_after_the_first_commit(tmp_path: Path) -> None:
    """Item 9: the READMEs said the hooks refuse conflicts, but nothing installed them."""
    project = copied_project(tmp_path)
    (project / ".pre-commit-config.yaml").write_text("repos: []\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pre-commit").write_text(
        f'#!/bin/sh\ngit rev-parse --verify HEAD && echo "$@" > {tmp_path / "called"}\n'
    )
    (fake / "pre-commit").chmod(0o755)
    path = f"{fake}{os.pathsep}{os.environ['PATH']}"
    result = copy_task(project, env={"MCP_TEMPLATE_SKIP_HOOKS": "0", "PATH": path})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "called").read_text().split() == ["install"]
    assert "Installed the pre-commit hooks" in result.stdout
    assert ".pre-commit-config.yaml" in git(project, "ls-files")


def test_copy_task_says_how_to_install_the_hooks_without_pre_commit(tmp_path: Path) -> None:
    project = copied_project(tmp_path)
    (project / ".pre-commit-config.yaml").write_text("repos: []\n")
    result = copy_task(project, env={"MCP_TEMPLATE_SKIP_HOOKS": "0", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "pre-commit is not installed" in result.stdout and "uvx pre-commit install" in result.stdout


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


# ---- items 9-11: conflicts are seen, retired names are refused, the migration keeps real values ---------


def test_after_update_reports_a_rej_file_the_old_gitignore_hid(
    rendered: Callable[[str], Path], tmp_path: Path
) -> None:
    """`.env.example.rej` was hidden by `.env.*`; the report said "No conflicts" while a setting was
    replaced."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(rendered("stdio") / ".gitignore", project / ".gitignore")
    (project / "README.md").write_text("# Acme\n")
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "-c", "user.name=U", "-c", "user.email=u@example.com", "commit", "--quiet", "-m", "0.1.0")
    (project / ".env.example.rej").write_text("@@ -1 +1 @@\n-MCP_A=1\n+MCP_B=1\n")
    (project / "README.md").write_text("# Acme\nchanged\n")
    ignored = run(["git", "check-ignore", ".env.example.rej"], project)
    assert ignored.returncode == 1, ".gitignore hides .env.example.rej"
    result = run([sys.executable, str(HOOKS / "after_update.py"), "0.1.0", "0.2.0"], project)
    assert ".env.example.rej: a hunk of yours that did not apply to .env.example" in result.stdout, (
        result.stdout
    )
    assert "No conflicts" not in result.stdout


def test_after_update_finds_conflicts_on_disk_that_git_does_not_show(tmp_path: Path) -> None:
    """An ignored file (here under .env.*) with markers or a *.rej is found on disk, not only in git
    status."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".gitignore").write_text(".env.*\n*.rej\n")  # an older .gitignore that hides both
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "-c", "user.name=U", "-c", "user.email=u@example.com", "commit", "--quiet", "-m", "0.1.0")
    (project / ".env.local").write_text(
        "<<<<<<< before updating\nA=1\n=======\nA=2\n>>>>>>> after updating\n"
    )
    (project / "Dockerfile.rej").write_text("@@ -1 +1 @@\n")
    result = run([sys.executable, str(HOOKS / "after_update.py"), "0.1.0", "0.2.0"], project)
    assert ".env.local: conflict markers" in result.stdout, result.stdout
    assert "Dockerfile.rej: a hunk of yours" in result.stdout
    assert "Nothing changed" not in result.stdout


def test_the_migration_keeps_a_real_old_value_over_an_empty_new_line() -> None:
    spec = importlib.util.spec_from_file_location("migrate_settings", HOOKS / "migrate_settings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text, _ = module.rename_in(
        "MCP_SECURITY_EVENTS_URL=\nMCP_AUDIT_URL=sqlite:///data/audit.db\n", module.RENAMES["0.2.0"]
    )
    values = [line for line in text.splitlines() if not line.startswith("#")]
    assert values == ["MCP_SECURITY_EVENTS_URL=sqlite:///data/audit.db"], text
    # With a real new value, the old line is the one commented out.
    text, _ = module.rename_in(
        "MCP_SECURITY_EVENTS_URL=redis://r/0\nMCP_AUDIT_URL=sqlite:///a.db\n", module.RENAMES["0.2.0"]
    )
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "MCP_SECURITY_EVENTS_URL=redis://r/0"
    ]


def test_the_settings_refuse_every_name_a_migration_retired() -> None:
    settings = (TEMPLATE_ROOT / "template" / "src" / "{{package_name}}" / "settings.py").read_text()
    found = re.search(r"^RETIRED_NAMES = (\{.*?\})$", settings, re.MULTILINE)
    assert found
    spec = importlib.util.spec_from_file_location("migrate_settings", HOOKS / "migrate_settings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    renames = {old: new for renames in module.RENAMES.values() for old, new in renames.items()}
    assert ast.literal_eval(found[1]) == renames


def conflict_step(project: Path) -> str:
    jobs = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())["jobs"]
    steps = [step for job in jobs.values() for step in job["steps"] if "conflict" in step.get("name", "")]
    assert len(steps) == 1, "the rendered CI has one step that refuses unresolved copier update conflicts"
    return str(steps[0]["run"])


def test_the_rendered_ci_refuses_conflict_markers_and_rej_files(
    rendered: Callable[[str], Path], tmp_path: Path
) -> None:
    """Item 9: a `.dockerignore` conflict used to commit with its markers, or with a hunk dropped in a
    .rej."""
    script = conflict_step(rendered("both"))
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git(checkout, "init", "--quiet")
    (checkout / "README.md").write_text("# Acme\n")
    git(checkout, "add", "--all")

    def ci() -> int:  # GitHub runs a step's `run` with `bash -e {0}`
        return run(["bash", "-e", "-c", script], checkout).returncode

    assert ci() == 0
    (checkout / ".dockerignore").write_text(
        "<<<<<<< before updating\n.env\n=======\n.git\n>>>>>>> after updating\n"
    )
    git(checkout, "add", "--all")
    assert ci() != 0
    (checkout / ".dockerignore").write_text(".git\n")
    (checkout / ".dockerignore.rej").write_text("@@ -1 +1 @@\n+.env\n")
    git(checkout, "add", "--all", "--force")
    assert ci() != 0


# ---- item 8: the answers file cannot quietly pick the code an update runs -----------------------------


def test_a_changed_template_source_fails_the_projects_tests_and_check(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    """A one-line pull request ("use the mirror") to _src_path would make the next update run a fork's
    code."""
    project = tmp_path / "project"
    shutil.copytree(rendered("stdio"), project, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    command, _ = package_of(project)
    pinned = (project / ".template-source").read_text()
    answers = (project / ".copier-answers.yml").read_text()
    source = yaml.safe_load(answers)["_src_path"]
    assert pinned.rstrip().splitlines()[-1] == source
    tests = [venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_template_source.py"]
    assert venv.run(*tests, cwd=project).returncode == 0
    assert venv.run(venv.bin(command), "check", cwd=project).returncode == 0
    (project / ".copier-answers.yml").write_text(answers.replace(source, "https://github.com/fork/template"))
    failed = venv.run(*tests, cwd=project)
    assert failed.returncode != 0 and "https://github.com/fork/template" in failed.stdout, failed.stdout
    refused = venv.run(venv.bin(command), "check", cwd=project)
    assert refused.returncode == 1
    assert "https://github.com/fork/template" in refused.stdout and ".template-source" in refused.stdout


# ---- item 12: answers that no longer match the files ----------------------------------------------------


def test_after_update_reports_answers_edited_by_hand(tmp_path: Path) -> None:
    """`transport: stdio` typed into .copier-answers.yml changes no file: the report must not say
    "Nothing changed"."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".copier-answers.yml").write_text("_commit: 0.2.0\ntransport: stdio\nauth: api_key\n")
    (project / "pyproject.toml").write_text(
        '[project]\ndependencies = [\n    "mcp>=2",\n    "uvicorn>=0.35,<1",\n]\n'
    )
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "-c", "user.name=U", "-c", "user.email=u@example.com", "commit", "--quiet", "-m", "0.2.0")
    result = run([sys.executable, str(HOOKS / "after_update.py"), "0.2.0", "0.2.0"], project)
    assert "transport: stdio" in result.stdout and "uvicorn" in result.stdout, result.stdout
    assert "Nothing changed" not in result.stdout


def test_check_warns_about_answers_and_commit_edited_by_hand(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    """An answer typed into .copier-answers.yml renders nothing (the project keeps serving HTTP), and a
    `_commit` moved forward by hand makes `copier update` skip the fixes in between: `check` says both."""
    project = tmp_path / "project"
    shutil.copytree(rendered("both"), project, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    command, _ = package_of(project)
    answers_file = project / ".copier-answers.yml"
    answers = answers_file.read_text()
    commit = yaml.safe_load(answers)["_commit"]
    assert f"# Rendered from template version {commit}\n" in answers
    clean = venv.run(venv.bin(command), "check", cwd=project)
    assert "copier-answers" not in clean.stdout, clean.stdout
    answers_file.write_text(
        answers.replace("transport: both", "transport: stdio")
        .replace(f"_commit: {commit}", "_commit: 9.9.9")
        .replace("sample_tools: []", "sample_tools:\n- sandbox")
    )
    result = venv.run(venv.bin(command), "check", cwd=project)
    assert "says transport: stdio, but the files were rendered for transport: both" in result.stdout
    assert f"says _commit: 9.9.9, but the files were rendered from template version {commit}" in result.stdout
    assert "sample_tools" in result.stdout and "'sandbox'" in result.stdout, result.stdout


def test_check_refuses_api_keys_left_after_switching_to_oauth(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(rendered("oauth"), project, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    command, _ = package_of(project)
    env = {
        "MCP_OAUTH_ISSUER": "https://issuer.example",
        "MCP_OAUTH_JWKS_URL": "https://issuer.example/jwks",
        "MCP_RESOURCE_URL": "https://mcp.example/mcp",
    }
    with (project / ".env").open("a") as handle:
        handle.write("MCP_API_KEYS=mcp_left-from-api-key-mode-0123456789\n")
    result = venv.run(venv.bin(command), "check", "--offline", cwd=project, env=env)
    # Refused, not ignored (issue 29): an OAuth server accepts no tool key.
    assert result.returncode == 1
    assert "ERROR    MCP_API_KEYS is set, but this project authenticates with OAuth" in result.stdout, (
        result.stdout
    )
