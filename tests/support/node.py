"""Node tools from the repository's package.json (`npm ci` puts them in ./node_modules), for third-party
checks.

The node binary itself comes from the pinned `node` package there too, so the checks run on Node 22
whatever the machine has. Missing tools fail the test with the command that installs them: CI runs it
(.ci/run), and a third-party check that silently did not run would prove nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from . import TEMPLATE_ROOT

NODE_BIN = TEMPLATE_ROOT / "node_modules" / ".bin"
MIN_NODE_MAJOR = 22
INSTALL_HINT = "run `npm ci` at the repository root (.ci/run does this)"


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with ./node_modules/.bin first on PATH, so `#!/usr/bin/env node` finds Node 22."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def node_tool(name: str) -> Path:
    """The path of a tool from node_modules/.bin, after checking that Node 22+ runs it; fails otherwise."""
    node = NODE_BIN / "node"
    tool = NODE_BIN / name
    if not node.exists() or not tool.exists():
        pytest.fail(f"{tool} is missing: {INSTALL_HINT}")
    version = subprocess.run(
        [str(node), "--version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0]) if version.startswith("v") else 0
    if major < MIN_NODE_MAJOR:
        pytest.fail(
            f"{node} is {version or 'not runnable'}; the checks need Node {MIN_NODE_MAJOR}+: {INSTALL_HINT}"
        )
    return tool


def run_node_tool(
    name: str, *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(node_tool(name)), *args],
        cwd=cwd,
        env=node_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
