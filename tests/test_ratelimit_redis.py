"""Replicas sharing one real redis-server: one combined limit, and refusals (not open doors) while it is
down."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from support import MCP_HEADERS, Server, Venv, jsonrpc, read_env_file, running_server, stdio_params, text_of
from support.redis import RedisServer
from support.tools import project_with_tools

pytestmark = pytest.mark.anyio

LIMIT = 10
KEY = "mcp_test-redis-key-0123456789abcdef"
OTHER_KEY = "mcp_test-redis-other-0123456789abcdef"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_with_tools(venv, tmp_path_factory.mktemp("abuse") / "project")


def env_for(project: Path, redis_server: RedisServer) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_API_KEYS": f"{KEY},{OTHER_KEY}",
        "MCP_RATE_LIMIT": f"{LIMIT}/minute",
        "MCP_RATE_LIMIT_STORAGE": redis_server.url,
        "MCP_SECURITY_EVENTS_URL": "memory://",
    }


@pytest.fixture(scope="module")
def replicas(venv: Venv, project: Path, redis_server: RedisServer) -> Iterator[tuple[Server, Server]]:
    env = env_for(project, redis_server)
    with running_server(venv, project, env) as first, running_server(venv, project, env) as second:
        yield first, second


async def post_call(http: httpx2.AsyncClient, server: Server, key: str) -> httpx2.Response:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {key}"}
    return await http.post(
        server.url, json=jsonrpc("tools/call", {"name": "whoami", "arguments": {}}), headers=headers
    )


def security_events(server: Server, name: str) -> list[dict[str, Any]]:
    lines = [
        json.loads(line) for line in server.log().splitlines() if line.startswith('{"logger":"security"')
    ]
    return [event for event in lines if event["event"] == name]


async def test_two_replicas_enforce_one_combined_limit(replicas: tuple[Server, Server]) -> None:
    responses: list[httpx2.Response] = []
    async with httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=3 * LIMIT)) as http:

        async def one(server: Server) -> None:
            responses.append(await post_call(http, server, KEY))

        async with anyio.create_task_group() as group:
            for index in range(3 * LIMIT):
                group.start_soon(one, replicas[index % 2])
        other = await post_call(http, replicas[1], OTHER_KEY)
    assert Counter(response.status_code for response in responses) == {200: LIMIT, 429: 2 * LIMIT}
    assert other.status_code == 200
    # Both replicas refused some: the limit is one shared count, not one per process.
    refused_by = {response.url.port for response in responses if response.status_code == 429}
    assert refused_by == {replicas[0].port, replicas[1].port}


async def test_redis_down_means_refusals_then_service_returns(
    replicas: tuple[Server, Server], redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        async with httpx2.AsyncClient(timeout=30) as http:
            down = [await post_call(http, server, OTHER_KEY) for server in replicas for _ in range(3)]
            ready = await http.get(replicas[0].base + "/health?ready")
    finally:
        redis_server.start()
    assert [response.status_code for response in down] == [503] * 6
    assert all(response.json()["error"] == "unavailable" for response in down)
    assert all("retry-after" in response.headers for response in down)
    assert "result" not in down[0].text
    assert ready.status_code == 503
    assert ready.json()["checks"]["rate_limit"] == "unavailable"
    assert any(
        e["details"].get("reason") == "storage_down"
        for e in security_events(replicas[0], "rate_limit_exceeded")
    )
    # Redis is back (empty: it keeps nothing on disk here); the replicas reconnect by themselves.
    async with httpx2.AsyncClient(timeout=30) as http:
        statuses = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            statuses = [(await post_call(http, server, OTHER_KEY)).status_code for server in replicas]
            if statuses == [200, 200]:
                break
            await anyio.sleep(0.2)
        assert statuses == [200, 200]
        await anyio.sleep(1.1)  # the readiness answer is cached for a second
        assert (await http.get(replicas[1].base + "/health?ready")).status_code == 200


async def test_tool_call_gets_an_error_result_while_redis_is_down(
    venv: Venv, project: Path, redis_server: RedisServer
) -> None:
    # On stdio there is no perimeter: the guard itself counts the call, and refuses it in the result.
    params = stdio_params(venv, project, env_for(project, redis_server))
    async with Client(params) as client:
        assert not (await client.call_tool("whoami", {})).is_error
        redis_server.stop()
        try:
            down = await client.call_tool("whoami", {})
        finally:
            redis_server.start()
        assert down.is_error
        assert "Rate limiting is unavailable, so calls are refused" in text_of(down)
        back = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            back = await client.call_tool("whoami", {})
            if not back.is_error:
                break
            await anyio.sleep(0.2)
        assert back is not None and not back.is_error, text_of(back)


def round_trips(redis_server: RedisServer, act: Callable[[], Any]) -> list[str]:
    """The commands clients sent Redis while `act` ran (MONITOR; not those scripts ran inside Redis)."""
    seen: list[str] = []
    with redis_server.client().monitor() as monitor:
        watcher = threading.Thread(target=lambda: seen.extend(_commands(monitor)), daemon=True)
        watcher.start()
        act()
        redis_server.client().echo("end-of-act")
        watcher.join(timeout=10)
    return seen


def _commands(monitor: Any) -> Iterator[str]:
    for command in monitor.listen():
        if command["command"] == "ECHO end-of-act":
            return
        name = command["command"].split()[0].upper()
        if command.get("client_type") != "lua" and name not in {"HELLO", "CLIENT"}:  # not connections' set-up
            yield name


def test_each_rate_limit_decision_is_one_redis_round_trip(
    venv: Venv, project: Path, redis_server: RedisServer
) -> None:
    env = {
        **env_for(project, redis_server),
        "MCP_RATE_LIMIT": "1000/minute",
        "MCP_RATE_LIMIT_STORAGE": redis_server.url.rsplit("/", 1)[0] + "/3",  # a database of its own
    }
    responses: list[httpx2.Response] = []

    def one_call() -> None:
        body = jsonrpc("tools/call", {"name": "whoami", "arguments": {}})
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {KEY}"}
        responses.append(httpx2.post(server.url, json=body, headers=headers, timeout=30))

    with running_server(venv, project, env) as server:
        one_call()  # connections open, scripts loaded
        sent = round_trips(redis_server, one_call)
    assert responses[-1].status_code == 200
    assert responses[-1].headers["ratelimit-remaining"] == "998"  # the figures came back with the decision
    # The call's three decisions, one script call each (five round trips before: a fixed window's figures
    # took a GET and a TTL, a moving window's take and its figures two scripts).
    assert sent == ["EVALSHA"] * 3, sent
