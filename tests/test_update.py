"""The template's lifecycle: the copy task, --trust, --skip-tasks, and `copier update` from an older tag.

The update tests follow doodba-copier-template: the template's working tree (uncommitted changes too) is
copied into a temporary git repository and tagged 0.1.0; a project is rendered from that tag, committed and
edited like a user would; the template changes and is tagged 0.2.0; then the project is updated for real
with `copier.run_update`, and we look at what merged, what conflicted and what was kept.

Version 0.1.0 here uses the settings name MCP_AUDIT_URL, which 0.2.0 renamed to MCP_SECURITY_EVENTS_URL
(the migration in copier.yml), so the migration runs on the history it was written for.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import run_update

from support import BASE, TEMPLATE_ROOT, Venv, package_of, read_env_file, render

GIT = [
    "git",
    "-c",
    "user.name=Template Dev",
    "-c",
    "user.email=dev@example.com",
    "-c",
    "commit.gpgsign=false",
]
OLD_NAMES = {"security_events_url": "audit_url", "SECURITY_EVENTS_URL": "AUDIT_URL"}
# Lines of README.md.jinja that 0.2.0 changes (the user changes the same rendered line: a conflict).
README_OLD = "\n{{ markdown_text(description) }}\n"
README_NEW = "\n{{ markdown_text(description) }} Kept up to date with `copier update`.\n"
USER_README_LINE = "Internal tools for the Acme support team."
CONFLICT_MARKERS = ("<<<<<<< before updating", "=======", ">>>>>>> after updating")
NEW_TOOL = '''"""A tool the user wrote after generating the project."""

from __future__ import annotations

from ..security.guard import Guard
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(scopes=("greet:read",), read_only=True)
    async def greet() -> str:
        """Say hello."""
        return "hello"
'''


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, capture_output=True, text=True, **kwargs)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def working_tree_files() -> list[Path]:
    """The template's files as they are now: tracked (with uncommitted edits) and new untracked ones."""
    listed = git(
        TEMPLATE_ROOT,
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
        "--",
        "copier.yml",
        "hooks",
        "includes",
        "template",
        "README.md",
        "CHANGELOG.md",
        "tool-locks",
    )
    return [
        Path(name) for name in sorted(set(listed.split("\0"))) if name and (TEMPLATE_ROOT / name).is_file()
    ]


def replace_in_tree(root: Path, replacements: dict[str, str]) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text()
            new = text
            for old, value in replacements.items():
                new = new.replace(old, value)
            if new != text:
                path.write_text(new)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: the test's edit no longer applies"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git copy of the template with tags 0.1.0 (old settings name) and 0.2.0 (today's template +
    changes)."""
    repo = tmp_path_factory.mktemp("template-repo")
    for rel in working_tree_files():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TEMPLATE_ROOT / rel, repo / rel)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all", "--force")
    git(repo, "commit", "--quiet", "-m", "today's template")
    replace_in_tree(repo / "template", OLD_NAMES)
    git(repo, "commit", "--quiet", "--all", "-m", "0.1.0: the audit store setting is MCP_AUDIT_URL")
    git(repo, "tag", "0.1.0")

    git(repo, "revert", "--no-edit", "HEAD")  # back to today's names: the rename the migration handles
    edit(repo / "template" / "README.md.jinja", README_OLD, README_NEW)
    with (repo / "template" / "SECURITY.md.jinja").open("a") as handle:
        handle.write("\nThis line arrived with template 0.2.0.\n")
    (repo / "template" / "UPGRADING.md").write_text("Notes that arrived with template 0.2.0.\n")
    # Template-owned settings.py changes, and so does the template's copy of the user-owned tool_settings.py.
    package_dir = repo / "template" / "src" / "{{package_name}}"
    with (package_dir / "settings.py").open("a") as handle:
        handle.write("\n# This line arrived with template 0.2.0.\n")
    edit(
        package_dir / "tool_settings.py",
        '"""Settings for your own tools.',
        '"""Settings for your own tools (0.2.0).',
    )
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "0.2.0")
    git(repo, "tag", "0.2.0")
    return repo


def make_project(template_repo: Path, dest: Path, **answers: Any) -> Path:
    project = render({**BASE, "sample_tools": [], **answers}, dest, vcs_ref="0.1.0", src=template_repo)
    assert git(project, "log", "--format=%s").strip(), "the copy task made no first commit"
    return project


def user_edits(project: Path, venv: Venv | None = None) -> str:
    """What a user does in a year: a tool module, a README line, settings in .env and in a tracked file."""
    _, package = package_of(project)
    tools = project / "src" / package / "tools"
    (tools / "greet.py").write_text(NEW_TOOL)  # served as it is: no list to edit (README)
    if venv:  # a new tool goes into the tool manifest lock after review, as the README says
        venv.install(project)
        command, _ = package_of(project)
        locked = venv.run(venv.bin(command), "check", "--update-lock", cwd=project)
        assert locked.returncode == 0, locked.stdout + locked.stderr
        assert "greet" in (project / "tools.lock.json").read_text()
    edit(project / "README.md", "\nA secure MCP server\n", f"\n{USER_README_LINE}\n")
    edit(project / ".env.example", "\nMCP_RATE_LIMIT=100/minute\n", "\nMCP_RATE_LIMIT=20/minute\n")
    with (project / ".env").open("a") as handle:
        handle.write("MCP_RATE_LIMIT=7/minute\nMCP_AUDIT_URL=sqlite:///data/audit.db\n")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "our changes")
    return package


def update(project: Path, **kwargs: Any) -> None:
    run_update(str(project), defaults=True, overwrite=True, unsafe=True, quiet=True, **kwargs)


def answers_of(project: Path) -> dict[str, Any]:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def test_update_keeps_user_edits_and_marks_the_conflict_inline(
    template_repo: Path, tmp_path: Path, venv: Venv
) -> None:
    project = make_project(template_repo, tmp_path / "p", project_name="Acme Upd Inline", transport="http")
    package = user_edits(project, venv)
    env_before = read_env_file(project)
    env_stat = (project / ".env").stat()
    commits = git(project, "rev-list", "--count", "HEAD")

    update(project, conflict="inline")

    # The user's tool survives, and is still served (the lock `check` compares below names it).
    assert (project / "src" / package / "tools" / "greet.py").read_text() == NEW_TOOL
    # Both sides changed the README line: the documented markers, the user's line first.
    readme = (project / "README.md").read_text()
    for marker in CONFLICT_MARKERS:
        assert marker in readme.splitlines(), marker
    ours, theirs = readme.split("<<<<<<< before updating\n", 1)[1].split("=======\n", 1)
    assert ours.startswith(USER_README_LINE)
    assert theirs.startswith("A secure MCP server Kept up to date with `copier update`.")
    # ...which the rendered pre-commit hook catches outside a git merge, as configured.
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    hook = next(h for repo in config["repos"] for h in repo["hooks"] if h["id"] == "check-merge-conflict")
    caught = run(
        [str(Path(sys.executable).parent / "check-merge-conflict"), *hook["args"], "README.md"], cwd=project
    )
    assert caught.returncode == 1 and "Merge conflict string" in caught.stdout
    # Template changes that touch nothing of the user's merge cleanly; new files arrive.
    assert "This line arrived with template 0.2.0." in (project / "SECURITY.md").read_text()
    assert (project / "UPGRADING.md").is_file()
    # The user's setting in a tracked file is kept, and the migration renamed the old name there too.
    example = (project / ".env.example").read_text()
    assert "\nMCP_RATE_LIMIT=20/minute\n" in example
    assert "MCP_AUDIT_URL" not in example and "\nMCP_SECURITY_EVENTS_URL=" in example
    # .env: never re-rendered; the migration renamed the one old name and touched nothing else.
    env_after = read_env_file(project)
    assert (
        env_after.pop("MCP_SECURITY_EVENTS_URL")
        == env_before.pop("MCP_AUDIT_URL")
        == "sqlite:///data/audit.db"
    )
    assert env_after == env_before and env_before["MCP_RATE_LIMIT"] == "7/minute"
    assert (project / ".env").stat().st_mode & 0o777 == 0o600
    assert (project / ".env").stat().st_ino == env_stat.st_ino
    # Answers are kept; the version moves on; the copy task did not run again (no commit, no new files).
    answers = answers_of(project)
    assert answers["_commit"] == "0.2.0"
    assert (answers["project_name"], answers["transport"], answers["auth"]) == (
        "Acme Upd Inline",
        "http",
        "api_key",
    )
    assert git(project, "rev-list", "--count", "HEAD") == commits
    # `check` refuses the unresolved conflict (issue 27 item 9), and nothing else: the migrated .env is valid
    # for the new version and the user's lock still matches. Once the conflict is resolved, it passes.
    command, _ = package_of(project)
    check = venv.run(venv.bin(command), "check", cwd=project)
    assert check.returncode == 1 and "ERROR    README.md: conflict markers" in check.stdout, check.stdout
    assert check.stdout.count("ERROR") == 1, check.stdout
    start, end = readme.index("<<<<<<< before updating\n"), readme.index(">>>>>>> after updating\n")
    (project / "README.md").write_text(
        readme[:start] + ours + readme[end + len(">>>>>>> after updating\n") :]
    )
    check = venv.run(venv.bin(command), "check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr


def test_update_with_rej_files_sets_the_users_hunk_aside(template_repo: Path, tmp_path: Path) -> None:
    project = make_project(template_repo, tmp_path / "p", project_name="Acme Upd Rej", transport="stdio")
    package = user_edits(project)

    update(project, conflict="rej")

    # The file takes the template's side; the user's hunk that no longer applies waits in README.md.rej.
    readme = (project / "README.md").read_text()
    assert "A secure MCP server Kept up to date with `copier update`." in readme
    assert not any(m in readme.splitlines() for m in CONFLICT_MARKERS)
    assert f"+{USER_README_LINE}" in (project / "README.md.rej").read_text()
    assert (project / "src" / package / "tools" / "greet.py").is_file()
    assert "This line arrived with template 0.2.0." in (project / "SECURITY.md").read_text()
    assert read_env_file(project)["MCP_SECURITY_EVENTS_URL"] == "sqlite:///data/audit.db"
    # The rendered pre-commit config refuses to commit a .rej file (its local hook, run for real).
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    local = [repo for repo in config["repos"] if repo["repo"] == "local"]
    local[0]["hooks"] = [h for h in local[0]["hooks"] if h["id"] == "no-rej-files"]
    (tmp_path / "local-hooks.yaml").write_text(yaml.safe_dump({"repos": local}))
    git(project, "add", "--all")
    refused = run(
        [
            str(Path(sys.executable).parent / "pre-commit"),
            "run",
            "--all-files",
            "-c",
            str(tmp_path / "local-hooks.yaml"),
        ],
        cwd=project,
        env={**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pc")},
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "README.md.rej" in refused.stdout and "unresolved `copier update` conflict" in refused.stdout


def test_changing_an_answer_adds_http_cleanly(template_repo: Path, tmp_path: Path, venv: Venv) -> None:
    answers = {"project_name": "Acme Grow", "transport": "stdio"}
    project = make_project(template_repo, tmp_path / "p", **answers)
    _, package = package_of(project)
    assert not (project / "src" / package / "transport" / "http" / "app.py").exists()

    update(project, data={"transport": "both"}, conflict="rej")

    assert (project / "src" / package / "transport" / "http" / "app.py").is_file()
    assert (project / "src" / package / "security" / "perimeter" / "auth.py").is_file()
    assert not list(project.rglob("*.rej"))
    assert answers_of(project)["transport"] == "both" and answers_of(project)["auth"] == "api_key"
    # Exactly what a fresh copy of 0.2.0 with these answers gives (the .env and git history aside).
    fresh = render(
        {**BASE, "sample_tools": [], **answers, "transport": "both"},
        tmp_path / "fresh",
        vcs_ref="0.2.0",
        src=template_repo,
        skip_tasks=True,
    )
    # tool_settings.py is the user's: an update keeps the copy 0.1.0 made (_skip_if_exists).
    ignore = [".git", ".env", ".copier-answers.yml", "__pycache__", "tool_settings.py"]
    compared = filecmp.dircmp(project, fresh, ignore=ignore)
    assert_same_tree(compared)
    venv.install(project)
    result = venv.run(venv.python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", cwd=project)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def assert_same_tree(compared: filecmp.dircmp[str]) -> None:
    assert not compared.left_only and not compared.right_only, (compared.left_only, compared.right_only)
    assert not compared.diff_files, compared.diff_files
    for sub in compared.subdirs.values():
        assert_same_tree(sub)


def test_update_does_not_rerun_the_copy_task(template_repo: Path, tmp_path: Path) -> None:
    """Copier renders three times during an update; the task's side effects must happen on none of them."""
    project = make_project(template_repo, tmp_path / "p", project_name="Acme Upd Quiet", transport="http")
    (project / ".env").unlink()  # the user keeps keys in a secret store; the task would make a new .env
    commits = git(project, "rev-list", "--count", "HEAD")

    update(project, conflict="rej")

    assert not (project / ".env").exists()
    assert not (project / "uv.lock").exists()
    assert git(project, "rev-list", "--count", "HEAD") == commits
    assert answers_of(project)["_commit"] == "0.2.0"


def copier_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([str(Path(sys.executable).parent / "copier"), *args], cwd=cwd, timeout=300)


def cli_update(project: Path, *args: str) -> str:
    """`copier update` as a user types it; what it printed (the report of hooks/after_update.py included)."""
    result = copier_cli("update", "--trust", "--defaults", *args, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_update_names_the_conflicted_files(template_repo: Path, tmp_path: Path) -> None:
    inline = make_project(template_repo, tmp_path / "i", project_name="Acme Says Inline", transport="stdio")
    user_edits(inline)
    said = cli_update(inline, "--conflict", "inline")
    assert "Updated (template 0.1.0 -> 0.2.0): " in said
    assert "Conflicts to resolve before you commit" in said
    assert "  README.md: conflict markers (<<<<<<< before updating ... >>>>>>> after updating)" in said
    assert said.count(": conflict markers") == 1  # the clean merges (SECURITY.md, ...) are not named
    rej = make_project(template_repo, tmp_path / "r", project_name="Acme Says Rej", transport="stdio")
    user_edits(rej)
    said = cli_update(rej, "--conflict", "rej")
    assert "  README.md.rej: a hunk of yours that did not apply to README.md" in said
    assert ": conflict markers" not in said


def test_update_says_when_nothing_changed(template_repo: Path, tmp_path: Path) -> None:
    answers = {**BASE, "sample_tools": [], "project_name": "Acme Current", "transport": "stdio"}
    project = render(answers, tmp_path / "p", vcs_ref="0.2.0", src=template_repo)
    said = cli_update(project, "--conflict", "inline")
    assert "Nothing changed (template 0.2.0 -> 0.2.0): the project already matches the template." in said
    assert "Updated" not in said and "Conflicts" not in said
    assert not git(project, "status", "--porcelain")


USER_TOOL_SETTINGS = '''"""Our settings."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class ToolSettings(BaseModel):
    reports_url: str = "https://reports.example.com"
    reports_token: SecretStr = SecretStr("")
    reports_timeout_seconds: float = Field(default=10, gt=0, le=60)
'''


def test_a_setting_of_ones_own_survives_an_update_without_conflicts(
    template_repo: Path, tmp_path: Path, venv: Venv
) -> None:
    project = make_project(template_repo, tmp_path / "p", project_name="Acme Own Setting", transport="stdio")
    command, package = package_of(project)
    own = project / "src" / package / "tool_settings.py"
    own.write_text(USER_TOOL_SETTINGS)
    with (project / ".env").open("a") as handle:
        handle.write("MCP_REPORTS_URL=https://reports.internal.example\nMCP_REPORTS_TOKEN=tok-3b9f0c\n")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "our reports settings")

    said = cli_update(project, "--conflict", "inline")

    assert "No conflicts." in said, said
    assert own.read_text() == USER_TOOL_SETTINGS  # kept as written, although the template's copy changed
    assert (
        "# This line arrived with template 0.2.0." in (project / "src" / package / "settings.py").read_text()
    )
    assert not list(project.rglob("*.rej"))
    assert (
        run(["git", "grep", "-l", "-E", "^<<<<<<< before updating$"], cwd=project).returncode == 1
    )  # none found
    venv.install(project)
    read = venv.run(
        venv.python,
        "-c",
        f"from {package}.settings import load_settings; "
        f"from {package}.server.services import secret_values; "
        "s = load_settings(); "
        "print(s.reports_url, s.reports_timeout_seconds, 'tok-3b9f0c' in secret_values(s))",
        cwd=project,
    )
    assert read.stdout.split() == ["https://reports.internal.example", "10.0", "True"], (
        read.stdout + read.stderr
    )
    check = venv.run(venv.bin(command), "check", cwd=project)  # MCP_REPORTS_* in .env are known names
    assert check.returncode == 0, check.stdout + check.stderr
    bad = venv.run(venv.bin(command), "check", cwd=project, env={"MCP_REPORTS_TIMEOUT_SECONDS": "600"})
    assert bad.returncode == 2 and "MCP_REPORTS_TIMEOUT_SECONDS" in bad.stderr, bad.stdout + bad.stderr


def test_an_untagged_template_copies_and_updates_to_a_later_commit(tmp_path: Path) -> None:
    """No tag anywhere: Copier copies HEAD, records the commit, and updates to a later one (README)."""
    repo = tmp_path / "untagged"
    for rel in working_tree_files():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TEMPLATE_ROOT / rel, repo / rel)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all", "--force")
    git(repo, "commit", "--quiet", "-m", "first")
    copied = copier_cli(
        "copy",
        "--trust",
        "--defaults",
        "--data",
        "project_name=Acme Untagged",
        "--data",
        "transport=stdio",
        "--data",
        "sample_tools=[]",
        str(repo),
        str(tmp_path / "p"),
        cwd=tmp_path,
    )
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert "No git tags found in template; using HEAD as ref" in copied.stderr
    project = tmp_path / "p"
    first = answers_of(project)["_commit"]
    assert first == git(repo, "rev-parse", "--short", "HEAD").strip()  # `git describe --always`: the commit
    edit(repo / "template" / "SECURITY.md.jinja", "\n", "\nThis line arrived in a later, untagged commit.\n")
    git(repo, "commit", "--quiet", "--all", "-m", "later")

    said = cli_update(project, "--conflict", "inline")

    assert "This line arrived in a later, untagged commit." in (project / "SECURITY.md").read_text()
    assert answers_of(project)["_commit"] != first
    assert "No conflicts." in said and "Updated (template 0.0.0.post" in said


def test_copier_refuses_the_template_without_trust(template_repo: Path, tmp_path: Path) -> None:
    refused = copier_cli(
        "copy",
        "--defaults",
        "--vcs-ref=0.2.0",
        "--data",
        "project_name=Acme Untrusted",
        str(template_repo),
        str(tmp_path / "p"),
        cwd=tmp_path,
    )
    assert refused.returncode == 4, refused.stderr
    assert (
        "Template uses potentially unsafe feature: tasks." in refused.stderr and "--trust" in refused.stderr
    )
    assert not (tmp_path / "p").exists()
    # Updating an existing project needs trust too (the update could run the migration).
    project = make_project(
        template_repo, tmp_path / "q", project_name="Acme Untrusted Upd", transport="stdio"
    )
    refused = copier_cli("update", "--defaults", cwd=project)
    assert refused.returncode == 4, refused.stderr
    assert "unsafe features: migrations, tasks." in refused.stderr
    assert answers_of(project)["_commit"] == "0.1.0"


def test_skip_tasks_without_trust_gives_a_working_project(tmp_path: Path, venv: Venv) -> None:
    result = copier_cli(
        "copy",
        "--defaults",
        "--skip-tasks",
        "--vcs-ref=HEAD",
        "--data",
        "project_name=Acme Skipped",
        "--data",
        "transport=http",
        "--data",
        "sample_tools=[]",
        str(TEMPLATE_ROOT),
        str(tmp_path / "p"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    project = tmp_path / "p"
    assert not (project / ".env").exists() and not (project / ".git").exists()
    assert "keygen --write-env" in result.stdout + result.stderr  # the message says what the task would do
    venv.install(project)
    command, _ = package_of(project)
    refused = venv.run(venv.bin(command), "check", cwd=project)
    assert refused.returncode != 0 and "keygen" in refused.stdout + refused.stderr
    made = venv.run(venv.bin(command), "keygen", "--write-env", cwd=project)
    assert made.returncode == 0, made.stderr
    assert (project / ".env").stat().st_mode & 0o777 == 0o600
    check = venv.run(venv.bin(command), "check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr


# ---- the copy task itself, run the way Copier runs it -------------------------------------------------


def run_hook(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    hook = TEMPLATE_ROOT / "hooks" / "post_copy.py"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "COPIER_"))}
    full.update({"MCP_TEMPLATE_SKIP_LOCK": "1", "HOME": str(cwd.parent), **env})
    return run(
        [
            sys.executable,
            str(hook),
            "--command=acme",
            "--author-name=Ada Author",
            "--author-email=ada@example.com",
            *args,
        ],
        cwd=cwd,
        env=full,
        timeout=120,
    )


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Callable[[], Path]:
    def make() -> Path:
        path = tmp_path / f"d{len(list(tmp_path.iterdir()))}" / "project"
        path.mkdir(parents=True)
        (path / "README.md").write_text("hello\n")
        (path / ".gitignore").write_text(".env\n")
        return path

    return make


def test_hook_commits_as_the_author_when_git_has_no_identity(fresh_dir: Callable[[], Path]) -> None:
    project = fresh_dir()
    no_config = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    result = run_hook(project, no_config)
    assert result.returncode == 0, result.stderr
    assert "Next steps" in result.stdout and "uv run acme serve" in result.stdout
    assert (project / ".env").stat().st_mode & 0o777 == 0o600
    env = read_env_file(project)
    assert env["MCP_API_KEYS"] != env["MCP_ADMIN_API_KEYS"] and len(env["MCP_API_KEYS"]) > 40
    assert git(project, "log", "--format=%an <%ae>").strip() == "Ada Author <ada@example.com>"
    assert ".env" not in git(project, "ls-files")  # the first commit respects .gitignore


def test_hook_uses_the_users_git_identity(fresh_dir: Callable[[], Path], tmp_path: Path) -> None:
    project = fresh_dir()
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Grace User\n\temail = grace@example.org\n")
    result = run_hook(project, {"GIT_CONFIG_GLOBAL": str(config), "GIT_CONFIG_NOSYSTEM": "1"})
    assert result.returncode == 0, result.stderr
    assert (
        run(
            ["git", "log", "--format=%an <%ae>"],
            cwd=project,
            env={**os.environ, "GIT_CONFIG_GLOBAL": str(config)},
        ).stdout.strip()
        == "Grace User <grace@example.org>"
    )


def test_hook_keeps_an_existing_env_and_an_enclosing_repository(fresh_dir: Callable[[], Path]) -> None:
    project = fresh_dir()
    git(project.parent, "init", "--quiet")
    (project / ".env").write_text("MCP_API_KEYS=mine\n")
    result = run_hook(project, {})
    assert result.returncode == 0, result.stderr
    assert (project / ".env").read_text() == "MCP_API_KEYS=mine\n"
    assert not (project / ".git").exists()
    assert "Inside an existing git repository" in result.stdout


def test_hook_does_nothing_outside_copy(fresh_dir: Callable[[], Path]) -> None:
    project = fresh_dir()
    result = run_hook(project, {"COPIER_OPERATION": "update"})
    assert result.returncode == 0, result.stderr
    assert not (project / ".env").exists() and not (project / ".git").exists()


def test_migration_renames_settings_and_keeps_everything_else(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# keys\nMCP_API_KEYS=k\nexport MCP_AUDIT_URL = sqlite:///x.db\nMCP_AUDIT_URLS=other\n")
    env.chmod(0o600)
    (tmp_path / ".env.example").write_text(
        "# MCP_AUDIT_URL=\nMCP_SECURITY_EVENTS_URL=memory://\nMCP_AUDIT_URL=a\n"
    )
    script = TEMPLATE_ROOT / "hooks" / "migrate_settings.py"
    result = run([sys.executable, str(script), "0.2.0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert env.read_text() == (
        "# keys\nMCP_API_KEYS=k\nexport MCP_SECURITY_EVENTS_URL = sqlite:///x.db\nMCP_AUDIT_URLS=other\n"
    )
    assert env.stat().st_mode & 0o777 == 0o600
    # The new name is already set in .env.example: the old assignment is commented out, not duplicated.
    assert (tmp_path / ".env.example").read_text() == (
        "# MCP_SECURITY_EVENTS_URL=\nMCP_SECURITY_EVENTS_URL=memory://\n"
        "# replaced by MCP_SECURITY_EVENTS_URL (set above or below): MCP_AUDIT_URL=a\n"
    )
    again = run([sys.executable, str(script), "0.2.0"], cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == ""  # idempotent


def test_readme_documents_every_question() -> None:
    config = yaml.safe_load((TEMPLATE_ROOT / "copier.yml").read_text())
    questions = [name for name in config if not name.startswith("_")]
    readme = (TEMPLATE_ROOT / "README.md").read_text()
    table = readme.split("## Questions", 1)[1].split("\n## ", 1)[0]
    for name in questions:
        assert f"`{name}`" in table, f"README's Questions table misses {name}"
    assert "copier update" in readme and "CHANGELOG.md" in readme
    changelog = (TEMPLATE_ROOT / "CHANGELOG.md").read_text()
    for migration in config["_migrations"]:
        if "version" in migration:  # the others run on every update (hooks/after_update.py)
            assert f"## {migration['version']}" in changelog and "Migration:" in changelog


# ---- updating a project of the last release to the new layout (the moves of 0.2.0) -----------------

# The commit before "Layout, pure moves": the layout every project generated until then has.
LAST_RELEASE = "1545a07"
OWN_TOOL = '''"""A tool of our own that uses the template's helper modules by their old paths."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..security.guard import Guard
from ..security.paths import split_relative
from ..security.private import private_directory
from ..security.urls import EgressPolicy, UrlRefusedError
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    policy = EgressPolicy()
    private_directory(settings.data_dir / "links")

    @guard.tool(read_only=True)
    async def check_link(url: Annotated[str, Field(max_length=200)]) -> str:
        """Say whether the fetch policy lets a URL through, and where our reports live."""
        try:
            policy.check_url(url)
        except UrlRefusedError as refused:
            return refused.message
        return f"allowed; reports at {settings.reports_url}, {len(split_relative('a/b'))} parts"
'''
OWN_TEST = '''"""Our own test, written against the old layout."""

from pathlib import Path

from {package}.security.paths import PathRefusedError, split_relative
from {package}.security.private import private_directory
from {package}.security.urls import EgressPolicy, UrlRefusedError


def test_old_paths(tmp_path: Path) -> None:
    private_directory(tmp_path / "ours")
    assert (tmp_path / "ours").stat().st_mode & 0o777 == 0o700
    assert split_relative("a/b") == ("a", "b")
    try:
        EgressPolicy().check_url("https://127.0.0.1/")
    except UrlRefusedError as refused:
        assert refused.rule == "address"
    try:
        split_relative("..")
    except PathRefusedError as refused:
        assert "'..'" in refused.reason
'''


@pytest.fixture(scope="module")
def layout_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git copy of the template: 0.1.0 is the last release's tree, 0.2.0 today's working tree."""
    repo = tmp_path_factory.mktemp("layout-repo")
    tar = tmp_path_factory.mktemp("archive") / "last-release.tar"
    archived = run(
        [
            "git",
            "archive",
            "-o",
            str(tar),
            LAST_RELEASE,
            "copier.yml",
            "hooks",
            "template",
            "README.md",
            "CHANGELOG.md",
            "tool-locks",
        ],
        cwd=TEMPLATE_ROOT,
    )
    assert archived.returncode == 0, (
        f"needs the template's history (git fetch --unshallow): {archived.stderr}"
    )
    shutil.unpack_archive(tar, repo)
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "--all", "--force")
    git(repo, "commit", "--quiet", "-m", "the last release")
    git(repo, "tag", "0.1.0")
    for top in ("copier.yml", "hooks", "template", "README.md", "CHANGELOG.md", "tool-locks"):
        target = repo / top
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    for rel in working_tree_files():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TEMPLATE_ROOT / rel, repo / rel)
    git(repo, "add", "--all", "--force")
    git(repo, "commit", "--quiet", "-m", "0.2.0: the new layout")
    git(repo, "tag", "0.2.0")
    return repo


def resolve_for_the_template(path: Path) -> None:
    """Resolve inline conflicts the way the README says for a template file: keep the template's side."""
    kept, side = [], "both"
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("<<<<<<< before updating"):
            side = "ours"
        elif line.startswith("=======") and side == "ours":
            side = "theirs"
        elif line.startswith(">>>>>>> after updating"):
            side = "both"
        elif side != "ours":
            kept.append(line)
    path.write_text("".join(kept))


def test_a_project_of_the_last_release_updates_to_the_new_layout(
    layout_repo: Path, tmp_path: Path, venv: Venv
) -> None:
    answers = {"project_name": "Acme Layout", "transport": "stdio", "sample_tools": ["fetch", "files"]}
    project = render({**BASE, **answers}, tmp_path / "p", vcs_ref="0.1.0", src=layout_repo)
    command, package = package_of(project)
    src = project / "src" / package
    # A year of the user's work, the old way: own tool modules in MODULES, an edited sample, own settings.
    (src / "tools" / "greet.py").write_text(NEW_TOOL)
    (src / "tools" / "linkcheck.py").write_text(OWN_TOOL)
    edit(src / "tools" / "__init__.py", "from . import about,", "from . import about, greet, linkcheck,")
    edit(src / "tools" / "__init__.py", "MODULES = (about,", "MODULES = (about, greet, linkcheck,")
    edit(src / "tools" / "files.py", "MAX_LISTED = 500", "MAX_LISTED = 200  # ours: shorter listings")
    (src / "tool_settings.py").write_text(USER_TOOL_SETTINGS)
    (project / "tests" / "test_linkcheck.py").write_text(OWN_TEST.format(package=package))
    with (project / ".env").open("a") as handle:
        handle.write("MCP_REPORTS_URL=https://reports.internal.example\n")
    venv.install(project)
    locked = venv.run(venv.bin(command), "check", "--update-lock", cwd=project)
    assert locked.returncode == 0, locked.stdout + locked.stderr
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "our tools")

    said = cli_update(project, "--conflict", "inline")

    status = {line[3:]: line[:2] for line in git(project, "status", "--porcelain").splitlines()}
    rel = f"src/{package}"
    # Merged: the user's own modules, settings and test are untouched; the moved modules are at their new
    # paths, and the old paths of the helper modules are re-exports now.
    assert (src / "tools" / "greet.py").read_text() == NEW_TOOL
    assert (src / "tools" / "linkcheck.py").read_text() == OWN_TOOL
    assert (src / "tool_settings.py").read_text() == USER_TOOL_SETTINGS
    assert (project / "tests" / "test_linkcheck.py").read_text() == OWN_TEST.format(package=package)
    for path in ("samples/files.py", "samples/fetch.py", "security/toolkit/paths.py", "answers.py"):
        assert (src / path).is_file(), path
    for old, new in (("paths", "toolkit.paths"), ("private", "toolkit.private"), ("urls", "toolkit.urls")):
        assert f"from .{new} import *" in (src / "security" / f"{old}.py").read_text()
    # Conflicted: the registration list of tools/__init__.py, which the template rewrote as discovery.
    assert status[f"{rel}/tools/__init__.py"] == "UU"
    assert "MODULES = (about, greet, linkcheck, fetch, files)" in (src / "tools" / "__init__.py").read_text()
    # The edited sample moved: Copier removes it from tools/ with the user's change, without a conflict,
    # and unedited moved files go quietly; the report names the edited one, and what to do.
    assert status[f"{rel}/tools/files.py"] == " D" and status[f"{rel}/tools/fetch.py"] == " D"
    assert "MAX_LISTED = 500" in (src / "samples" / "files.py").read_text()
    assert f"  {rel}/tools/__init__.py: conflict markers" in said
    assert f"  {rel}/tools/__init__.py: modules in tools/ are now found without MODULES" in said
    assert (
        f"  {rel}/tools/files.py: removed by this update (now samples/files.py) although it had changes"
        in said
    )
    assert f"git checkout HEAD -- {rel}/tools/files.py" in said
    assert "tools/fetch.py" not in said and "server.py" not in said, said

    # Resolved as the README says: the template's side of tools/__init__.py, and the edited sample kept
    # as a tool of the user's (it replaces the sample of the same name).
    resolve_for_the_template(src / "tools" / "__init__.py")
    git(project, "checkout", "HEAD", "--", f"{rel}/tools/files.py")
    venv.install(project)
    tests = venv.run(venv.python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", cwd=project)
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    # The old import paths work (the user's tool is served, lock unchanged), and `check` names each one.
    check = venv.run(venv.bin(command), "check", cwd=project)
    assert check.returncode == 0, check.stdout + check.stderr
    for old, new in (("paths", "toolkit.paths"), ("private", "toolkit.private"), ("urls", "toolkit.urls")):
        for path, source in ((f"{rel}/tools/linkcheck.py", OWN_TOOL), ("tests/test_linkcheck.py", OWN_TEST)):
            line = next(
                n for n, text in enumerate(source.splitlines(), 1) if f"security.{old} import" in text
            )
            moved = f"imports {package}.security.{old}, which moved to {package}.security.{new} (re-exported"
            assert f"  WARNING  {path}:{line} {moved}" in check.stdout, (path, old, check.stdout)
    assert f"WARNING  {rel}/tools/files.py is served in place of the sample samples/files.py" in check.stdout
