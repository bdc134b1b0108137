"""Copier task, run once after `copier copy` (standard library only).

1. Create .env with fresh random keys (mode 600) unless it exists.
2. `git init` and a first commit when the destination is not already inside a git repository.
3. Lock dependencies with uv when uv is on PATH.
Nothing here is needed for the project to work: `keygen --write-env` does step 1 by hand.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess  # nosec B404 - fixed argument lists, no shell
import sys
from pathlib import Path


def write_env(path: Path) -> bool:
    if path.exists():
        return False
    keys = {
        "MCP_API_KEYS": "mcp_" + secrets.token_urlsafe(32),
        "MCP_ADMIN_API_KEYS": "mcp_" + secrets.token_urlsafe(32),
    }
    body = "# Made by the template at copy time. Never commit this file.\n"
    body += "".join(f"{name}={value}\n" for name, value in keys.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    return True


def run(*command: str) -> bool:
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=300)  # nosec B603
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def inside_git_repository() -> bool:
    git = shutil.which("git")
    return bool(git) and run(git or "git", "rev-parse", "--is-inside-work-tree")


def main() -> int:
    root = Path.cwd()
    if write_env(root / ".env"):
        print("Created .env with a fresh tool key and admin key (mode 600; git ignores it).")
    uv = shutil.which("uv")
    if uv and os.environ.get("MCP_TEMPLATE_SKIP_LOCK") != "1":
        print("Locked dependencies in uv.lock." if run(uv, "lock", "--quiet") else "uv lock failed; run it later.")
    git = shutil.which("git")
    if git and not inside_git_repository():
        ok = run(git, "init", "--quiet") and run(git, "add", "--all")
        ok = ok and run(
            git, "-c", "user.name=copier", "-c", "user.email=copier@localhost",
            "commit", "--quiet", "--no-verify", "-m", "Initial project from the secure MCP template",
        )
        print("Made a git repository with a first commit." if ok else "git init failed; the files are in place.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
