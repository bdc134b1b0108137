"""The MCP Inspector CLI (npm @modelcontextprotocol/inspector, --cli), a client nobody here wrote,
lists and calls the rendered server's tools over stdio and over HTTP with a bearer key."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import Server, Venv, client_key, key_holder, package_of, read_env_file, running_server
from support.node import run_node_tool


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("both")


@pytest.fixture(scope="module")
def http_server(project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        venv, project, read_env_file(project), log_dir=tmp_path_factory.mktemp("logs")
    ) as server:
        yield server


def inspector(*args: str, cwd: Path, home: Path) -> tuple[int, Any, str]:
    """Run `inspector --cli ARGS`: (exit code, parsed JSON answer or None, stderr)."""
    # HOME: the Inspector keeps a catalog and storage there; keep them out of the real home.
    result = run_node_tool("inspector", "--cli", *args, cwd=cwd, timeout=120, env={"HOME": str(home)})
    try:
        answer = json.loads(result.stdout)
    except json.JSONDecodeError:
        answer = None
    return result.returncode, answer, result.stdout + result.stderr


def stdio_target(venv: Venv, project: Path) -> list[str]:
    command, _ = package_of(project)
    return ["--", venv.bin(command), "serve", "--transport", "stdio"]


def test_stdio_tools_list(project: Path, venv: Venv, tmp_path: Path) -> None:
    code, answer, output = inspector(
        "--method", "tools/list", *stdio_target(venv, project), cwd=project, home=tmp_path
    )
    assert code == 0, output
    tools = {tool["name"]: tool for tool in answer["tools"]}
    assert "whoami" in tools
    assert tools["whoami"]["annotations"]["readOnlyHint"] is True
    assert tools["whoami"]["inputSchema"]["additionalProperties"] is False


def test_stdio_tools_call(project: Path, venv: Venv, tmp_path: Path) -> None:
    code, answer, output = inspector(
        "--method",
        "tools/call",
        "--tool-name",
        "whoami",
        *stdio_target(venv, project),
        cwd=project,
        home=tmp_path,
    )
    assert code == 0, output
    assert answer["isError"] is False
    assert "principal: local-stdio" in answer["content"][0]["text"]


def test_http_tools_list_and_call_with_bearer_key(http_server: Server, tmp_path: Path) -> None:
    key = client_key(http_server.env)
    header = ["--header", f"Authorization: Bearer {key}"]
    code, listed, output = inspector(
        http_server.url, "--method", "tools/list", *header, cwd=tmp_path, home=tmp_path
    )
    assert code == 0, output
    assert "whoami" in [tool["name"] for tool in listed["tools"]]
    code, called, output = inspector(
        http_server.url,
        "--method",
        "tools/call",
        "--tool-name",
        "whoami",
        *header,
        cwd=tmp_path,
        home=tmp_path,
    )
    assert code == 0, output
    assert called["isError"] is False
    assert f"principal: {key_holder(http_server.env)}\n" in called["content"][0]["text"]
    assert key not in output


@pytest.mark.parametrize(
    "header", [[], ["--header", "Authorization: Bearer mcp_wrong-key-00000000000000000000"]]
)
def test_http_without_a_valid_key_gets_nothing(
    http_server: Server, tmp_path: Path, header: list[str]
) -> None:
    code, _, output = inspector(
        http_server.url, "--method", "tools/list", *header, cwd=tmp_path, home=tmp_path
    )
    assert code != 0, output
    assert "whoami" not in output
