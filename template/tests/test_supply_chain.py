"""What CI and the git hooks fetch is pinned: actions and hooks by commit SHA (the tag in a comment), uv by
version. A tag can be moved to other code after review; a commit SHA cannot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
HOOKS = ROOT / ".pre-commit-config.yaml"
HOOK_PINNED = re.compile(r"[0-9a-f]{40} # v\d[\w.]*")
PINNED = re.compile(r"@[0-9a-f]{40} # v\d[\w.]*$")
# Hook repositories whose tag could not be matched to a commit when the template was made (the config says
# so next to each); `uvx pre-commit autoupdate --freeze` pins them.
UNVERIFIED = ("https://github.com/astral-sh/ruff-pre-commit",)


@pytest.mark.skipif(not WORKFLOW.is_file(), reason="no CI workflow")
def test_every_action_is_pinned_by_commit() -> None:
    uses = [line.strip() for line in WORKFLOW.read_text(encoding="utf-8").splitlines() if "uses:" in line]
    assert uses
    for line in uses:
        assert PINNED.search(line), f"pin by commit SHA, with the tag in a comment: {line}"


@pytest.mark.skipif(not WORKFLOW.is_file(), reason="no CI workflow")
def test_ci_installs_a_pinned_uv() -> None:
    steps = WORKFLOW.read_text(encoding="utf-8").split("\n      - ")
    setup = [step for step in steps if "astral-sh/setup-uv@" in step]
    assert setup
    for step in setup:
        assert re.search(r'^\s+version: "\d+\.\d+\.\d+"$', step, re.MULTILINE), step


def test_every_hook_repository_is_pinned_by_commit() -> None:
    text = HOOKS.read_text(encoding="utf-8")
    repos = re.findall(r"- repo: (\S+)\n\s+rev: ([^\n]+)", text)
    assert repos
    for repo, rev in repos:
        if repo in UNVERIFIED:
            continue
        assert HOOK_PINNED.fullmatch(rev), f"{repo}: pin rev by commit SHA, with the tag in a comment"


@pytest.mark.skipif(not (ROOT / "Dockerfile").is_file(), reason="no Dockerfile")
def test_the_image_installs_uv_by_hash() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", "")
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs
    for line in installs:
        assert "--require-hashes" in line and "uv==" in line and "--hash=sha256:" in line, line
