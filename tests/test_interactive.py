"""Interactive `copier copy --trust TEMPLATE DEST`, driven in a pseudo-terminal as a user types it.

Every other test answers with `--defaults --data`, which never shows a prompt: these tests go through
Copier's real questionary prompts (text, select, multiselect, confirm), then run the project's `check`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pexpect
import yaml

from support import TEMPLATE_ROOT, Venv, clean_env, package_of

DOWN, UP, SPACE, ENTER = "\x1b[B", "\x1b[A", " ", "\r"


def copier_in_pty(dest: Path) -> pexpect.spawn:
    copier = shutil.which("copier", path=str(Path(sys.executable).parent))
    assert copier, "copier is a dev dependency of the template's tests"
    env = clean_env({"MCP_TEMPLATE_SKIP_LOCK": "1", "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})
    return pexpect.spawn(
        copier,
        ["copy", "--trust", "--vcs-ref", "HEAD", str(TEMPLATE_ROOT), str(dest)],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )


def answer(child: pexpect.spawn, question: str, *keys: str) -> None:
    child.expect_exact(question)
    for key in keys:
        child.send(key)


def test_interactive_copy_renders_a_project_whose_check_passes(tmp_path: Path, venv: Venv) -> None:
    dest = tmp_path / "pty-demo"
    child = copier_in_pty(dest)
    try:
        answer(child, "Human-readable name", "Pty Demo", ENTER)
        answer(child, "Distribution and command-line name", ENTER)  # the slug made from the name
        answer(child, "Python package name", ENTER)
        answer(child, "One-line description", ENTER)
        answer(child, "Author name", ENTER)
        answer(child, "Author e-mail", ENTER)
        answer(child, "Which transports", UP, ENTER)  # from the default (both) up to http
        answer(child, "How do HTTP clients authenticate", ENTER)
        answer(child, "Which hardened sample tools", SPACE, ENTER)  # untick the first one (files)
        answer(child, "Include a hardened Dockerfile", ENTER)
        answer(child, "Include a GitHub Actions workflow", "n")
        child.expect(pexpect.EOF, timeout=300)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "Pty Demo" and answers["project_slug"] == "pty-demo"
    assert answers["transport"] == "http" and answers["auth"] == "api_key"
    assert answers["sample_tools"] == ["records", "fetch", "sandbox", "notes", "upstream"]
    assert answers["include_docker"] is True and answers["include_ci"] is False
    assert (dest / ".env").is_file() and (dest / ".git").is_dir()
    venv.install(dest)
    command, _ = package_of(dest)
    check = venv.run(venv.bin(command), "check", cwd=dest)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configuration is valid" in check.stdout


def test_an_empty_name_typed_interactively_is_refused_with_the_rule(tmp_path: Path) -> None:
    child = copier_in_pty(tmp_path / "never")
    try:
        answer(child, "Human-readable name", "   ", ENTER)
        child.expect_exact("project_name must not be empty")
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert not (tmp_path / "never" / "src").exists()
