"""The rendered server for real: stdio as a subprocess, HTTP under uvicorn, the official MCP client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client

from support import (
    Server,
    Venv,
    client_key,
    http_client,
    jsonrpc,
    key_holder,
    post_mcp,
    read_env_file,
    running_server,
    stdio_params,
    text_of,
)
from support.perimeter import security_events

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def http_server(rendered: Callable[[str], Path], venv: Venv) -> Iterator[Server]:
    project = rendered("both")
    with running_server(venv, project, read_env_file(project)) as server:
        yield server


def tool_called_events(server: Server) -> list[dict[str, object]]:
    return [event for event in security_events(server) if event["event"] == "tool_called"]


async def test_stdio_lists_and_calls_a_tool(rendered: Callable[[str], Path], venv: Venv) -> None:
    project = rendered("stdio")
    async with Client(stdio_params(venv, project)) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert "whoami" in names
        result = await client.call_tool("whoami", {})
    assert not result.is_error
    assert "local-stdio" in text_of(result)


async def test_both_project_also_serves_stdio(rendered: Callable[[str], Path], venv: Venv) -> None:
    project = rendered("both")
    async with Client(stdio_params(venv, project)) as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error


async def test_http_with_the_key_from_env_lists_and_calls(http_server: Server) -> None:
    key = client_key(http_server.env)
    async with http_client(http_server.url, key) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        result = await client.call_tool("whoami", {})
    assert "whoami" in names
    assert not result.is_error
    assert f"principal: {key_holder(http_server.env)}\n" in text_of(result)
    assert key not in text_of(result)


@pytest.mark.parametrize("token", [None, "mcp_wrong-key-000000000000000000000000"])
async def test_http_without_a_valid_key_is_401_and_no_tool_runs(
    http_server: Server, token: str | None
) -> None:
    before = len(tool_called_events(http_server))
    response = await anyio.to_thread.run_sync(
        lambda: post_mcp(http_server, jsonrpc("tools/call", {"name": "whoami", "arguments": {}}), token)
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "result" not in response.json()
    await anyio.sleep(0.2)
    assert len(tool_called_events(http_server)) == before


async def test_http_refuses_to_start_without_a_key(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    rendered("http_none")  # installs the console script
    # Run it where there is no .env, so no key is configured.
    result = venv.run(venv.bin("acme-bare"), "serve", "--transport", "http", cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "MCP_API_KEYS" in result.stderr and "keygen" in result.stderr
    assert "Traceback" not in result.stderr


async def test_http_refuses_to_start_without_a_key_in_env_file(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    rendered("http_none")
    (tmp_path / ".env").write_text("MCP_API_KEYS=\n")
    result = venv.run(venv.bin("acme-bare"), "serve", "--transport", "http", cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "MCP_API_KEYS is empty" in result.stderr
