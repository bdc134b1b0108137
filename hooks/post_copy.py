"""Copier task, run once after `copier copy` in the new project (standard library only).

1. Create .env with fresh random keys (mode 600) unless it exists: a tool key and an admin key, or with
   OAuth (clients bring access tokens) the admin key alone. With HTTP, a request-state
   key too. The tool key is named after the author (else $USER, else "owner"): `<name>:mcp_...`, so
   rotating it with `keygen --name <name>` keeps the caller, its audit trail and its data.
   An existing .env is kept, and the report says so (and whether others can read it).
2. Lock dependencies with `uv lock` when uv is on PATH (MCP_TEMPLATE_SKIP_LOCK=1 skips it).
3. `git init` and a first commit when the destination is not already inside a git repository,
   as the user's git identity when one is configured, else as the project's author. The commit holds
   only the files the copy rendered (and uv.lock): anything the destination held before is named and
   left uncommitted. The commit runs the user's git hooks (no --no-verify).
4. Install the project's pre-commit hooks (they refuse conflict markers and *.rej files) when
   `pre-commit` is on PATH, after the first commit; say how when it is not (MCP_TEMPLATE_SKIP_HOOKS=1
   skips this).
5. Print the next steps.
Nothing here is needed for the project to work: `keygen --write-env`, `uv lock` and `git init` do the
same by hand (a project copied with --skip-tasks).

    python post_copy.py --command <slug> --package <package> --transport <stdio|http|both>
                        [--auth api_key|oauth] --author-name N --author-email E
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess  # nosec B404 - fixed argument lists, no shell
import sys
import unicodedata
from pathlib import Path

COMMIT_MESSAGE = "Initial project from the secure MCP server template"
TEMPLATE = Path(__file__).resolve().parents[1] / "template"  # copier.yml's _subdirectory
ANSWERS_FILE = ".copier-answers.yml"  # copier.yml's _answers_file
NAMED = 30  # files named in the report, at most
EXCLUDED = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".venv", ".DS_Store"}
# The Jinja in the template's file names: `{% if ... %}name{% endif %}` (the name, when it was rendered)
# and `{{ variable }}`.
CONDITIONAL = re.compile(r"\{%-?\s*if\b.*?%\}(.*?)\{%-?\s*endif\s*-?%\}")
VARIABLE = re.compile(r"\{\{-?\s*([\w.]+)\s*-?\}\}")


def key_name(text: str) -> str | None:
    """`text` as a key name (the project's security/identity/keys.py:key_name, which this hook cannot
    import): ASCII letters, digits, '.', '_', '-'; None if nothing is left. "Zoë O'Brien" -> "zoe-o-brien"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9._-]+", "-", ascii_text.lower()).strip("-._")[:64].rstrip("-._")
    return name or None


def write_env(path: Path, *, tool_key: bool = True, name: str = "owner") -> bool:
    """A fresh .env with a tool key named `name` (unless OAuth) and an admin key; never replaces a file."""
    if path.exists():
        return False
    keys = {"MCP_API_KEYS": f"{name}:mcp_" + secrets.token_urlsafe(32)} if tool_key else {}
    keys["MCP_ADMIN_API_KEYS"] = "mcp_" + secrets.token_urlsafe(32)
    body = "# Made by the template at copy time. Never commit this file.\n"
    body += "".join(f"{name}={value}\n" for name, value in keys.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    return True


def env_kept_note(path: Path) -> str:
    """What to say about a .env that was there before the copy (the task never replaces one)."""
    note = "  Kept the existing .env (not replaced): check that its keys and settings are current"
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return (
            f"{note}.\n  It is readable by others (mode {mode:o}): chmod 600 .env  "
            "(`check` refuses it until then)."
        )
    return note + "."


def rendered_names(package: str) -> set[str]:
    """The paths, relative to the project, of every file the template can render for this package."""
    values = {"package_name": package, "_copier_conf.answers_file": ANSWERS_FILE}
    names = set()
    for path in TEMPLATE.rglob("*"):
        if not path.is_file() or EXCLUDED & set(path.relative_to(TEMPLATE).parts):
            continue
        name = CONDITIONAL.sub(r"\1", path.relative_to(TEMPLATE).as_posix())
        name = VARIABLE.sub(lambda m: values.get(m[1], m[0]), name)
        names.add(name.removesuffix(".jinja"))
    return names


def add_request_state_key(path: Path) -> None:
    """The key that seals consent retries (MCP_REQUEST_STATE_KEYS): replicas sharing this .env share it."""
    with path.open("a") as handle:
        handle.write(f"MCP_REQUEST_STATE_KEYS={secrets.token_hex(32)}\n")


def run(*command: str, timeout: float = 300) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(  # nosec B603 - fixed argument lists
            command, check=True, capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.SubprocessError):
        return None


def lock(uv: str | None) -> str:
    if os.environ.get("MCP_TEMPLATE_SKIP_LOCK") == "1":
        return "skipped"
    if not uv:
        return "no uv"
    return "locked" if run(uv, "lock", "--quiet") else "failed"


def git_identity(git: str, name: str, email: str) -> list[str]:
    """`-c` options for the first commit: none when the user has an identity, else the author's."""
    configured = run(git, "config", "user.name") and run(git, "config", "user.email")
    if configured:
        return []
    return ["-c", f"user.name={name or 'MCP template'}", "-c", f"user.email={email or 'mcp@localhost'}"]


def init_repository(name: str, email: str, package: str) -> tuple[str, list[str]]:
    """("committed" or why not, the files left out of the first commit because the copy did not make them)."""
    git = shutil.which("git")
    if not git:
        return "no git", []
    if run(git, "rev-parse", "--is-inside-work-tree"):
        return "inside a repository", []
    listed = run(git, "init", "--quiet") and run(git, "ls-files", "-z", "--others", "--exclude-standard")
    if not listed:
        return "failed", []
    ours = rendered_names(package) | {"uv.lock"}
    untracked = sorted(name for name in listed.stdout.split("\0") if name)
    mine = [name for name in untracked if name in ours]
    foreign = [name for name in untracked if name not in ours]
    # No --no-verify: the user's own git hooks (core.hooksPath, a global template) judge this commit too.
    ok = mine and run(git, "add", "--", *mine)
    ok = ok and run(git, *git_identity(git, name, email), "commit", "--quiet", "-m", COMMIT_MESSAGE)
    return ("committed" if ok else "failed"), foreign


def install_hooks(repository: str) -> str:
    """`pre-commit install` in the new repository (never in an enclosing one, which is the user's)."""
    if os.environ.get("MCP_TEMPLATE_SKIP_HOOKS") == "1":
        return "skipped"
    if repository != "committed" or not Path(".pre-commit-config.yaml").is_file():
        return "no repository"
    pre_commit = shutil.which("pre-commit")
    if not pre_commit:
        return "no pre-commit"
    return "installed" if run(pre_commit, "install") else "failed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", default="<command>")
    parser.add_argument("--package", default="")
    parser.add_argument("--transport", default="both")
    parser.add_argument("--auth", default="api_key")
    parser.add_argument("--author-name", default="")
    parser.add_argument("--author-email", default="")
    args = parser.parse_args(argv)
    # copier.yml runs this task on copy only; refuse the other operations too, should that line change:
    # during `copier update` tasks also run in temporary copies, where a key or a commit makes no sense.
    operation = os.environ.get("COPIER_OPERATION", "copy")
    if operation != "copy":
        print(f"post_copy: nothing to do during copier {operation}.")
        return 0

    root = Path.cwd()
    oauth = args.auth == "oauth" and args.transport != "stdio"
    env_kept = (root / ".env").is_file()
    name = key_name(args.author_name) or key_name(os.environ.get("USER", "")) or "owner"
    env_made = write_env(root / ".env", tool_key=not oauth, name=name)
    if env_made and args.transport != "stdio":
        add_request_state_key(root / ".env")
    locked = lock(shutil.which("uv"))
    repository, foreign = init_repository(args.author_name, args.author_email, args.package)
    hooks = install_hooks(repository)

    print()
    if env_made and oauth:
        print("  Created .env with a fresh admin key (mode 600; git ignores it); OAuth clients bring tokens.")
    elif env_made:
        print(
            f"  Created .env with a fresh tool key named {name} and an admin key (mode 600; git ignores it)."
        )
    elif env_kept:
        print(env_kept_note(root / ".env"))
    print(
        {
            "locked": "  Locked the dependencies in uv.lock.",
            "failed": "  `uv lock` failed (offline?): run it later, before `uv sync --locked`.",
            "no uv": "  uv is not installed: `pip install uv`, then `uv lock`.",
            "skipped": "  Skipped `uv lock` (MCP_TEMPLATE_SKIP_LOCK=1).",
        }[locked]
    )
    print(
        {
            "committed": "  Made a git repository with a first commit (`copier update` needs one).",
            "inside a repository": "  Inside an existing git repository: commit the new files yourself.",
            "failed": "  `git init` or the first commit failed (a git hook of yours may have refused it): "
            "`copier update` needs the project in git.",
            "no git": "  git is not installed: `copier update` needs the project in git.",
        }[repository]
    )
    print(
        {
            "installed": "  Installed the pre-commit hooks: each commit is linted and refuses conflict "
            "markers\n  and *.rej files.",
            "no pre-commit": "  pre-commit is not installed, so commits are not checked: "
            "`uvx pre-commit install`\n  installs the hooks (they refuse conflict markers and *.rej files).",
            "failed": "  `pre-commit install` failed: run it yourself (the hooks refuse conflict markers "
            "and *.rej).",
            "no repository": "",
            "skipped": "",
        }[hooks],
        end="\n" if hooks in ("installed", "no pre-commit", "failed") else "",
    )
    if foreign:
        print("  These files were in the destination before the copy and are not committed; add the ones")
        print("  that belong to the project yourself (never credentials):")
        print("".join(f"    {name}\n" for name in foreign[:NAMED]), end="")
        if len(foreign) > NAMED:
            print(f"    ... and {len(foreign) - NAMED} more (`git status` lists them)")
    if args.transport == "stdio":
        serving = "speaks MCP on stdin/stdout"
    elif oauth:
        serving = "serves http://127.0.0.1:8000/mcp once MCP_OAUTH_* are set in .env"
    else:
        serving = "serves http://127.0.0.1:8000/mcp (bearer key: MCP_API_KEYS in .env, after its name)"
    print("\nNext steps:")
    print(f"  cd {root}")
    print(f"  uv run {args.command} check   # validates .env and prints the security report")
    print(f"  uv run {args.command} serve   # {serving}")
    if oauth:
        print("  Set MCP_OAUTH_ISSUER, MCP_OAUTH_JWKS_URL and MCP_RESOURCE_URL in .env")
        print("  (README.md has the settings for Keycloak, Entra ID, Auth0, Okta and Google).")
        print("  Clients need no key: they get an access token from your authorization server for")
        print(
            "  MCP_RESOURCE_URL (the server's 401 tells them where); the admin key is for /security/events."
        )
    print("  README.md shows how to connect Claude Desktop, VS Code, Cursor and the MCP Inspector.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
