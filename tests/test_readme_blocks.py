"""Every block of a rendered README that a user would paste runs as written, in one terminal, in order.

The project's own paths, keys and a free port are substituted; `npx @modelcontextprotocol/inspector@2.12.0`
is the same Inspector from node_modules/.bin. Blocks that start a server run until it answers, then get
Ctrl-C; the blocks that call the server run against one started for them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support import TEMPLATE_ROOT, Venv, free_port, package_of, read_env_file, running_server
from support.node import NODE_BIN, node_env
from support.readme import EXECUTED, Terminal, blocks, convention_problems, shell_text

INSPECTOR = "npx -y @modelcontextprotocol/inspector@"


def pinned_inspector() -> str:
    return json.loads((TEMPLATE_ROOT / "node_modules/@modelcontextprotocol/inspector/package.json").read_text())[
        "version"]


@pytest.mark.parametrize("answers", ["both", "http_all", "stdio", "oauth"])
def test_rendered_readme_follows_the_block_convention(answers: str, rendered: Callable[[str], Path]) -> None:
    readme = (rendered(answers) / "README.md").read_text()
    assert not convention_problems(readme)
    for block in blocks(readme):
        if INSPECTOR in block.body:
            assert f"{INSPECTOR}{pinned_inspector()} " in block.body  # the version the tests run


def test_rendered_readme_blocks_run_as_written(rendered: Callable[[str], Path], venv: Venv, tmp_path: Path) -> None:
    project = tmp_path / "acme-both"
    shutil.copytree(rendered("both"), project, symlinks=True)
    command, _ = package_of(project)
    data = tmp_path / "data"
    env = node_env({"HOME": str(tmp_path), "MCP_DATA_DIR": str(data), "UV_CACHE_DIR": uv_cache()})
    env.pop("VIRTUAL_ENV", None)
    terminal = Terminal(project, env, tmp_path)
    outputs: list[str] = []
    with running_server(venv, project, {**read_env_file(project), "MCP_DATA_DIR": str(tmp_path / "bg")},
                        log_dir=tmp_path) as server:
        for block in blocks((project / "README.md").read_text()):
            if block.lang not in EXECUTED or block.skip is not None:
                continue
            text = (shell_text(block).replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
                    .replace(f"{INSPECTOR}{pinned_inspector()}", str(NODE_BIN / "mcp-inspector"))
                    .replace(f"/path/to/{command}", str(project)))
            if block.lang == "python":
                (project / "call.py").write_text(text)
                text = "uv run python call.py"
            if block.starts_server:
                code, log = terminal.serve(text, free_port())
                assert "Application shutdown complete" in log and "Traceback" not in log, log
                continue
            result = terminal.run(text)
            (project / "call.py").unlink(missing_ok=True)  # the user's scratch file, not the project's
            assert result.returncode == 0, f"README line {block.line}:\n{text}\n{result.stdout}{result.stderr}"
            outputs.append(result.stdout)
    joined = "\n".join(outputs)
    assert '"name":"whoami"' in joined.replace(" ", "")  # curl tools/list
    assert "principal: key:" in joined  # the Python script's call
    assert '"events":' in joined  # the audit trail, read with the admin key
    assert joined.count("whoami") >= 3  # ... and both Inspector lines listed the tool


def uv_cache() -> str:
    return subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
