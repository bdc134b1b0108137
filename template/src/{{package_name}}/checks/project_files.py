"""`check`'s look at the project on disk (not the settings): what a copy or an update can leave behind.

- `.env` readable by others: its keys are the server's credentials.
- Unresolved `copier update` conflicts: conflict markers or `*.rej` files.
- A template source other than the reviewed one: `copier update` runs code from the repository that
  _src_path in .copier-answers.yml names, so it must equal the pin in .template-source.
- Answers edited by hand in .copier-answers.yml (answers_file.py): Copier rendered nothing for them.
- Credentials of an authentication mode this project no longer uses (after `copier update` changed
  the `auth` answer): MCP_API_KEYS with OAuth is ignored now, and would be accepted again on a switch back.

Each check reads files under the current directory only when it is the project (its pyproject.toml is
there), so `check` run elsewhere (a container without the sources) skips them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .. import answers
from .answers_file import answers_file_problems, read_answers

if TYPE_CHECKING:
    from ..settings import Settings

ENV_FILE = Path(".env")
ANSWERS_FILE = Path(".copier-answers.yml")
SOURCE_PIN = Path(".template-source")
# Copier's markers (`copier update --conflict inline`) and git's: at the start of a line.
CONFLICT_MARKERS = ("<<<<<<< ", ">>>>>>> ")
# Not the project's own files: tools, caches, data, git itself.
SKIPPED_DIRECTORIES = {
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}
DATA_DIRECTORY = "data"  # at the top: what the server writes (MCP_DATA_DIR's default)
LARGEST_SCANNED = 1_000_000  # bytes: bigger files are data, not code the template renders


def project_problems(settings: Settings, root: Path = Path()) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the files of the project in `root`."""
    errors: list[str] = []
    warnings: list[str] = []
    errors.extend(env_file_problems(root / ENV_FILE))
    if (root / "pyproject.toml").is_file():
        errors.extend(conflict_problems(root))
        errors.extend(template_source_problems(root))
        warnings.extend(answers_file_problems(root))
    if answers.AUTH_MODE == "oauth" and settings.api_keys.get_secret_value():
        errors.append(
            "MCP_API_KEYS is set, but this project authenticates with OAuth access tokens: the server "
            "accepts no tool key, and would accept these again if the project switched back to API keys. "
            "Remove MCP_API_KEYS from .env and revoke the keys"
        )
    return errors, warnings


def env_file_problems(path: Path) -> list[str]:
    """A .env that others can read gives them the server's keys."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return []
    if mode & 0o077:
        return [f"{path} is readable by others (mode {mode:o}): it holds the server's keys; chmod 600 {path}"]
    return []


def template_source_problems(root: Path) -> list[str]:
    """_src_path in the answers file differs from the reviewed pin (or the pin is gone)."""
    try:
        answers = (root / ANSWERS_FILE).read_text(encoding="utf-8")
    except OSError:
        return []  # not made with copier, or run outside the project
    source = read_answers(answers)[0].get("_src_path", "")  # the last one, as Copier reads a repeated key
    try:
        lines = (root / SOURCE_PIN).read_text(encoding="utf-8").splitlines()
    except OSError:
        return [f"{SOURCE_PIN} is missing: restore it from git (it pins the template `copier update` runs)"]
    pinned = next((line.strip() for line in reversed(lines) if line.strip() and not line.startswith("#")), "")
    if source != pinned:
        return [
            f"{ANSWERS_FILE} names the template {source or '(none)'}, not the reviewed {pinned} in "
            f"{SOURCE_PIN}: the next `copier update` would run that template's code. Restore _src_path, "
            "or change both files together in a reviewed commit"
        ]
    return []


def conflict_problems(root: Path) -> list[str]:
    """Unresolved `copier update` conflicts: a `*.rej` file, or a file with conflict markers."""
    problems = []
    for path in _project_files(root):
        name = path.relative_to(root)
        if path.suffix == ".rej":
            problems.append(f"{name}: an unresolved copier update conflict; merge it by hand, then delete it")
        elif _has_conflict_markers(path):
            problems.append(f"{name}: conflict markers (<<<<<<< ... >>>>>>>); resolve them")
    return problems


def _project_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.iterdir()):
        if path.is_symlink() or path.name == DATA_DIRECTORY:
            continue
        yield from _files_under(path)


def _files_under(path: Path) -> Iterator[Path]:
    if path.is_dir() and not path.is_symlink() and path.name not in SKIPPED_DIRECTORIES:
        for child in sorted(path.iterdir()):
            yield from _files_under(child)
    elif path.is_file() and not path.is_symlink():
        yield path


def _has_conflict_markers(path: Path) -> bool:
    try:
        if path.stat().st_size > LARGEST_SCANNED:
            return False
        with path.open("rb") as handle:
            return any(line.startswith(tuple(m.encode() for m in CONFLICT_MARKERS)) for line in handle)
    except OSError:
        return False
