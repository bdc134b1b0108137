"""`check`'s comparison of .copier-answers.yml with the files it claims to describe.

Copier renders nothing for an answer edited by hand, so `transport: stdio` typed into the answers file
leaves a project that still serves HTTP, and `_commit` moved forward by hand makes `copier update` report
"already matches" while the fixes in between never arrive. The rendered code records what it was made
from (answers.py, and the stamp line Copier writes into the answers file itself); this compares the two.
"""

from __future__ import annotations

from pathlib import Path

from .. import answers

ANSWERS_FILE = Path(".copier-answers.yml")
STAMP = "# Rendered from template version "
TRANSPORT_ANSWER = {("http", "stdio"): "both", ("http",): "http", ("stdio",): "stdio"}


def answers_file_problems(root: Path = Path()) -> list[str]:
    """Warnings: answers that differ from what the project's files were rendered with."""
    try:
        text = (root / ANSWERS_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    given, lists, stamp = read_answers(text)
    rendered = {
        "transport": TRANSPORT_ANSWER[answers.TRANSPORTS],
        "auth": answers.AUTH_MODE if answers.AUTH_MODE != "none" else given.get("auth", ""),
    }
    fix = "restore it (`git checkout` the answers file), then change it with `copier update --data KEY=VALUE`"
    found = [
        f"{ANSWERS_FILE} says {key}: {given[key]}, but the files were rendered for {key}: {value}; {fix}"
        for key, value in rendered.items()
        if key in given and given[key] != value
    ]
    samples = lists.get("sample_tools")
    if samples is not None and sorted(samples) != sorted(answers.SAMPLE_TOOLS):
        found.append(
            f"{ANSWERS_FILE} lists sample_tools {sorted(samples)}, but the files were rendered with "
            f"{sorted(answers.SAMPLE_TOOLS)}; {fix}"
        )
    commit = given.get("_commit")
    if stamp and commit and commit != stamp:
        found.append(
            f"{ANSWERS_FILE} says _commit: {commit}, but the files were rendered from template version "
            f"{stamp}: _commit was moved by hand, so `copier update` would skip the fixes in between. "
            f"Set _commit back to {stamp}, then run `copier update --trust`"
        )
    return found


def read_answers(text: str) -> tuple[dict[str, str], dict[str, list[str]], str]:
    """(scalars, lists, stamp) of an answers file as Copier writes it: `key: value` and `- item` lines."""
    scalars: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    stamp, key = "", ""
    for line in text.splitlines():
        if line.startswith(STAMP):
            stamp = line.removeprefix(STAMP).strip()
        elif line.lstrip().startswith("- ") and key:
            lists.setdefault(key, []).append(yaml_scalar(line.lstrip()[2:]))
        elif ":" in line and not line.startswith((" ", "#")):
            key, value = (part.strip() for part in line.split(":", 1))
            if value == "[]":
                lists[key] = []
            elif value:
                scalars[key] = yaml_scalar(value)
    return scalars, lists, stamp


def yaml_scalar(text: str) -> str:
    """A one-line YAML scalar as Copier writes it: plain, 'single' or "double" quoted."""
    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) > 1 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text
