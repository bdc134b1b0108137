"""SingleExchange: 2025-era stateless JSON requests answered in their own task (single_exchange.py).

The SDK's client speaks 2026-07-28 to our server by default, which the SDK serves itself; clients that
still use the initialize handshake (most in the field, the conformance suite, the Inspector) reach
SingleExchange. It must answer exactly as the protocol asks, and hand everything else to the SDK.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from support import (
    MCP_HEADERS,
    Server,
    Venv,
    client_key,
    http_client,
    jsonrpc,
    key_holder,
    post_mcp,
    read_env_file,
    running_server,
    text_of,
)
from support.perimeter import security_events

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server(rendered: Callable[[str], Path], venv: Venv) -> Iterator[Server]:
    project = rendered("http_all")
    with running_server(venv, project, read_env_file(project)) as running:
        yield running


def tool_called(server: Server) -> list[dict[str, Any]]:
    return [event for event in security_events(server) if event["event"] == "tool_called"]


async def session_answers(server: Server, mode: str) -> dict[str, Any]:
    # A client waits forever for an answer that does not carry its request id: fail instead.
    with anyio.fail_after(30):
        return await _session_answers(server, mode)


async def _session_answers(server: Server, mode: str) -> dict[str, Any]:
    async with http_client(server.url, client_key(server.env), mode=mode) as client:
        return {
            "tools": sorted(tool.name for tool in (await client.list_tools()).tools),
            "whoami": text_of(await client.call_tool("whoami", {})),
            "extra argument": text_of(await client.call_tool("whoami", {"admin": True})),
            "unknown tool": text_of(await client.call_tool("no_such_tool", {})),
            "bad query": text_of(await client.call_tool("query_records", {"table": "users; --"})),
            "resource": [c.text for c in (await client.read_resource("about://server")).contents],
            "prompt": [m.content.text for m in (await client.get_prompt("use_tools_safely", {})).messages],
        }


async def test_a_legacy_client_gets_what_a_2026_client_gets(server: Server) -> None:
    modern = await session_answers(server, "auto")
    legacy = await session_answers(server, "legacy")
    assert legacy == modern
    assert f"principal: {key_holder(server.env)}\n" in legacy["whoami"]
    assert "query_records" in legacy["tools"]


async def test_each_legacy_call_is_audited_once_with_its_principal(server: Server) -> None:
    before = len(tool_called(server))
    with anyio.fail_after(30):
        async with http_client(server.url, client_key(server.env), mode="legacy") as client:
            for _ in range(3):
                assert not (await client.call_tool("whoami", {})).is_error
    await anyio.sleep(0.2)
    events = tool_called(server)[before:]
    assert len(events) == 3
    holder = key_holder(server.env)
    assert all(event["identifier"] == holder and event["tool"] == "whoami" for event in events)


def post(server: Server, body: Any, headers: dict[str, str] | None = None) -> httpx2.Response:
    return post_mcp(server, body, client_key(server.env), headers)


@pytest.mark.parametrize("request_id", [7, "call-7", 0])
def test_the_answer_carries_the_request_id_and_the_perimeter_headers(server: Server, request_id: Any) -> None:
    response = post(server, {**jsonrpc("tools/call", {"name": "whoami", "arguments": {}}), "id": request_id})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "mcp-session-id" not in response.headers
    body = response.json()
    assert body["id"] == request_id and body["jsonrpc"] == "2.0"
    assert f"principal: {key_holder(server.env)}\n" in body["result"]["content"][0]["text"]


def test_initialize_from_a_json_only_client_is_answered_without_a_session(server: Server) -> None:
    """A client that cannot read SSE could not be asked anything: it stays stateless (sessions are for
    SSE)."""
    params = {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    }
    response = post(server, jsonrpc("initialize", params), headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    assert response.json()["result"]["protocolVersion"] == "2025-06-18"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (jsonrpc("no/such/method"), -32601),
        (jsonrpc("resources/read", {}), -32602),  # no uri
        (jsonrpc("resources/read", {"uri": "about://nothing-here"}), None),
    ],
)
def test_protocol_errors_are_json_rpc_errors_without_internals(
    server: Server, body: Any, code: int | None
) -> None:
    response = post(server, body)
    assert response.status_code == 200
    error = response.json()["error"]
    assert code is None or error["code"] == code
    assert "Traceback" not in response.text and "/site-packages/" not in response.text


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, {}, 202, None),
        ("{not json", {}, 400, -32700),
        ([jsonrpc("ping", id=1), jsonrpc("ping", id=2)], {}, 400, -32602),
        ({"jsonrpc": "2.0", "id": 1, "result": {}}, {}, 202, None),
        (jsonrpc("ping"), {"Accept": "text/event-stream"}, 406, None),
        (jsonrpc("ping"), {"Content-Type": "text/plain"}, 400, None),
    ],
    ids=["notification", "not-json", "batch", "response", "no-json-accept", "not-json-content-type"],
)
def test_what_is_not_one_request_goes_to_the_sdk(
    server: Server, body: Any, headers: dict[str, str], status: int, code: int | None
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    all_headers = {**MCP_HEADERS, "Authorization": f"Bearer {client_key(server.env)}", **headers}
    response = httpx2.post(server.url, content=content, headers=all_headers, timeout=30)
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text and "result" not in response.text
    if code is not None:
        assert response.json()["error"]["code"] == code


def test_a_newer_protocol_revision_is_left_to_the_sdk(server: Server) -> None:
    response = post(server, jsonrpc("ping"), {"Mcp-Protocol-Version": "2099-01-01"})
    assert response.status_code == 400
    assert "result" not in response.json()
