"""Copier migration run after every `copier update`: say what the update did (standard library only).

Copier's own closing message cannot know whether anything changed or what conflicted, so this script
looks: files with conflict markers (`--conflict inline`) and `*.rej` files (`--conflict rej`) are listed
by name; an update that changed nothing says so.

    python after_update.py <version from> <version to>      # in the project, after the update
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ANSWERS = ".copier-answers.yml"
MARKERS = (b"<<<<<<< before updating", b">>>>>>> after updating")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, check=True).stdout.decode(
        "utf-8", "surrogateescape"
    )


def status() -> list[tuple[str, str]]:
    """(git status code, path from the project) of every changed or new file in it, one per file.

    The rendered .gitignore does not ignore *.rej files, so they are among the new ones. Paths are made
    relative to the project, which may be a subdirectory of the repository.
    """
    prefix = git("rev-parse", "--show-prefix").strip()
    entries: list[tuple[str, str]] = []
    fields = iter(git("status", "--porcelain", "-z", "--untracked-files=all", "--", ".").split("\0"))
    for field in fields:
        if not field:
            continue
        code, path = field[:2], field[3:]
        if code[0] in "RC":
            next(fields, None)  # a rename's second field is the old name
        entries.append((code, path.removeprefix(prefix)))
    return entries


def has_markers(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return any(line.rstrip() in MARKERS for line in handle)
    except OSError:
        return False


def report(entries: list[tuple[str, str]], version_from: str, version_to: str) -> list[str]:
    changed = [path for _, path in entries if path != ANSWERS]
    rejects = sorted(path for _, path in entries if path.endswith(".rej"))
    marked = sorted(path for path in changed if not path.endswith(".rej") and has_markers(Path(path)))
    where = f"template {version_from} -> {version_to}"
    if not changed and not rejects:
        if any(path == ANSWERS for _, path in entries):
            return [f"Nothing changed in your files ({where}); {ANSWERS} records the new version: commit it."]
        return [f"Nothing changed ({where}): the project already matches the template."]
    lines = [f"Updated ({where}): {len(changed)} file(s) changed; review `git diff` and `git status`."]
    if marked or rejects:
        lines.append("Conflicts to resolve before you commit (the pre-commit hooks refuse them):")
        lines += [
            f"  {path}: conflict markers (<<<<<<< before updating ... >>>>>>> after updating)"
            for path in marked
        ]
        lines += [f"  {path}: a hunk of yours that did not apply to {path[:-4]}" for path in rejects]
    else:
        lines.append("No conflicts.")
    lines.append("Then run the checks and commit. The template's CHANGELOG.md lists what changed.")
    return lines


def main(argv: list[str]) -> int:
    version_from, version_to = [*argv, "?", "?"][:2]
    try:
        entries = status()
    except (OSError, subprocess.CalledProcessError):
        print("Updated. Review `git diff`; resolve conflict markers or *.rej files, then commit.")
        return 0
    print("\n".join(report(entries, version_from, version_to)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
