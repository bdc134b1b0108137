"""Copier migration run after every `copier update`: say what the update did (standard library only).

Copier's own closing message cannot know whether anything changed or what conflicted, so this script
looks: files with conflict markers (`--conflict inline`) and `*.rej` files (`--conflict rej`) are listed
by name; an update that changed nothing says so. It looks on disk as well as in `git status`: a file that
.gitignore hides (`.env.example.rej` under an old `.env.*` rule) is a conflict all the same. It also
compares the answers with the files: an answer edited by hand in .copier-answers.yml changes no file.
Files the template moved (MOVED, the table of CHANGELOG.md) are named too: one left at its old path,
and one this update removed from its old path although it held changes of the user's (Copier drops
those changes without a conflict: the old file is compared with the old version's template, found in
the template repository this script comes from).

    python after_update.py <version from> <version to>      # in the project, after the update
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ANSWERS = ".copier-answers.yml"
MARKERS = (b"<<<<<<< before updating", b">>>>>>> after updating")
# Not the project's files: tools, caches, what the server writes.
SKIPPED = {
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "data",
}
LARGEST_SCANNED = 1_000_000  # bytes
TEMPLATE = Path(__file__).resolve().parent.parent  # the template repository (Copier's clone of it)
SAMPLES = ("fetch", "fetch_transport", "files", "notes", "records", "sandbox", "upstream")
# Old path -> new path, under src/<package>/ (template 0.2.0). CHANGELOG.md has the same table.
MOVED = {
    **{f"tools/{name}.py": f"samples/{name}.py" for name in SAMPLES},
    "tools/records.sql": "samples/records.sql",
    "server.py": "server/build.py",
    "services.py": "server/services.py",
    "tracing.py": "server/observability.py",
    "operations.py": "server/observability.py",
    "app.py": "transport/http/app.py",
    "single_exchange.py": "transport/http/stateless.py",
    "notifying.py": "transport/http/streaming.py",
    "sessions.py": "transport/http/sessions.py",
    "session_answers.py": "transport/http/session_manager.py",
    "replay.py": "transport/http/session_manager.py",
    "security/perimeter/events_api.py": "transport/http/admin.py",
    "security/perimeter/metrics_api.py": "transport/http/admin.py",
    **{
        f"security/{name}.py": f"security/audit/{name}.py"
        for name in ("events", "alerts", "anomaly", "metrics")
    },
    **{
        f"security/event_stores/{name}.py": f"security/audit/event_stores/{name}.py"
        for name in ("__init__", "redis", "sqlite")
    },
    "security/ratelimit.py": "security/limits.py",
    **{
        f"security/{name}.py": f"security/toolkit/{name}.py" for name in ("sandbox_cgroup", "sandbox_seccomp")
    },
    "security/guard.py": "security/guard/__init__.py",
    "security/perimeter/oauth.py": "security/perimeter/oauth/__init__.py",
}


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


def on_disk(root: Path = Path()) -> list[str]:
    """Every *.rej file and every file with conflict markers under `root`, ignored by git or not."""
    found = []
    for folder, directories, files in os.walk(root):
        directories[:] = sorted(d for d in directories if d not in SKIPPED)
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_symlink():
                continue
            small = path.stat().st_size <= LARGEST_SCANNED
            if name.endswith(".rej") or (small and has_markers(path)):
                found.append(path.relative_to(root).as_posix())
    return found


# What each answer leaves in pyproject.toml (the dependencies it adds), to tell a hand-edited answer.
ANSWER_MARKS = {
    ("transport", "stdio"): ("uvicorn", False),  # stdio only: no HTTP server
    ("transport", "http"): ("uvicorn", True),
    ("transport", "both"): ("uvicorn", True),
    ("auth", "oauth"): ("pyjwt", True),
    ("auth", "api_key"): ("pyjwt", False),
}


def answers(root: Path = Path()) -> dict[str, str]:
    """The plain `key: value` lines of the answers file (all that this check needs)."""
    try:
        lines = (root / ANSWERS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in lines if ":" in line and not line.startswith((" ", "-", "#")))
    return {key.strip(): value.strip().strip("'\"") for key, value in pairs}


def answer_mismatches(root: Path = Path()) -> list[str]:
    """Answers the files do not match (edited by hand, so Copier rendered nothing for them)."""
    given = answers(root)
    try:
        pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return []
    if given.get("transport") == "stdio":
        given.pop("auth", None)  # not asked for stdio
    found = []
    for (key, value), (dependency, expected) in ANSWER_MARKS.items():
        if given.get(key) == value and (f'"{dependency}' in pyproject) != expected:
            state = "depends on" if not expected else "does not depend on"
            found.append(
                f"  {ANSWERS} says {key}: {value}, but pyproject.toml {state} {dependency}: the answer was "
                f"edited by hand and no file changed. Restore it (`git checkout {ANSWERS}`), then run "
                f"`copier update --trust --defaults --data {key}={value}`"
            )
    return found


def report(
    entries: list[tuple[str, str]], version_from: str, version_to: str, conflicts: list[str] | None = None
) -> list[str]:
    """The report, from `git status` (entries) and the conflicts found on disk."""
    changed = [path for _, path in entries if path != ANSWERS]
    changed += [path for path in conflicts or [] if path not in changed]
    rejects = sorted(path for path in changed if path.endswith(".rej"))
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
    lines += moved_report(entries, marked)
    lines.append("Then run the checks and commit. The template's CHANGELOG.md lists what changed.")
    return lines


def package_dir() -> Path | None:
    found = [path.parent.parent for path in Path("src").glob("*/tools/__init__.py")]
    return found[0] if len(found) == 1 else None


def moved_report(entries: list[tuple[str, str]], marked: list[str]) -> list[str]:
    """Files at the template's old paths: left there, or removed by this update with the user's changes."""
    package = package_dir()
    if package is None:
        return []
    deleted = {path for code, path in entries if "D" in code}
    lines = []
    tools_init = f"{package}/tools/__init__.py"
    if tools_init in marked:
        lines.append(
            f"  {tools_init}: modules in tools/ are now found without MODULES; take the template's side "
            "(the part after =======), your modules are served all the same"
        )
    for old, new in MOVED.items():
        path, moved_to = f"{package}/{old}", package / new
        if not moved_to.exists():
            continue
        if Path(path).exists() and old.startswith("tools/"):
            lines.append(
                f"  {path}: served in place of the sample {new}; keep it as your own tool, or delete it to "
                "serve the template's sample"
            )
        elif Path(path).exists():
            lines.append(f"  {path}: left at its old path, now {new}; move what is yours there, delete it")
        elif path in deleted and changed_by_user(path, package.name):
            sample = old.startswith("tools/") and old.endswith(".py")
            keep = (
                f", or keep yours as a tool of your own with `git checkout HEAD -- {path}` "
                "(a module in tools/ with a sample's name is served in its place)"
                if sample
                else ""
            )
            lines.append(
                f"  {path}: removed by this update (now {new}) although it had changes of yours, "
                f"which are not in {new}: see `git diff HEAD -- {path}` and carry them over{keep}"
            )
    if lines:
        lines.insert(0, 'Moved by the template (CHANGELOG.md, "Moved files"):')
    return lines


def changed_by_user(path: str, package: str) -> bool:
    """Whether the last commit's `path` differs from what the template it was made from rendered there.

    Unknown (no template history, or a rendered .jinja file) counts as changed: better said than lost.
    """
    try:
        mine = subprocess.run(["git", "show", f"HEAD:./{path}"], capture_output=True, check=True).stdout
        answers = git("show", f"HEAD:./{ANSWERS}")
        commit = re.search(r"^_commit: *(\S+)", answers, re.MULTILINE)
        if commit is None:
            return True
        names = (
            subprocess.run(
                ["git", "-C", str(TEMPLATE), "ls-tree", "-r", "--name-only", commit.group(1), "template/src"],
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .splitlines()
        )
    except (OSError, subprocess.CalledProcessError):
        return True
    for name in names:
        if rendered_name(name, package) == path:
            old = subprocess.run(
                ["git", "-C", str(TEMPLATE), "show", f"{commit.group(1)}:{name}"],
                capture_output=True,
                check=False,
            )
            return old.returncode != 0 or old.stdout != mine
    return True


def rendered_name(name: str, package: str) -> str:
    """A template path as rendered, when its conditions hold: `{% if ... %}x{% endif %}` becomes x."""
    name = re.sub(r"\{\{ *package_name *\}\}", package, name.removeprefix("template/"))
    return re.sub(r"\{%.*?%\}", "", name)


def main(argv: list[str]) -> int:
    version_from, version_to = [*argv, "?", "?"][:2]
    conflicts = on_disk()
    try:
        entries = status()
    except (OSError, subprocess.CalledProcessError):
        if not conflicts:
            print("Updated. Review `git diff`; resolve conflict markers or *.rej files, then commit.")
            return 0
        entries = []
    lines = report(entries, version_from, version_to, conflicts)
    mismatches = answer_mismatches()
    if mismatches:
        lines = [line for line in lines if not line.startswith("Nothing changed")]
        lines += ["The answers do not match the files:", *mismatches]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
