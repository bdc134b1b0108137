"""Abuse resistance against the real server: exact rate limits, per-tool limits, timeouts, caps, shutdown.

The project is rendered, given a module of misbehaving test-only tools the documented way
(tests/support/tools.py), installed and served under uvicorn; requests are real HTTP and real MCP.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from support import (
    MCP_HEADERS,
    Server,
    Venv,
    eventually,
    http_client,
    jsonrpc,
    post_mcp_async,
    read_env_file,
    running_server,
    text_of,
)
from support.tools import project_with_tools

pytestmark = pytest.mark.anyio

LIMIT = 10
KEYS = {  # raw keys with a random tail: guessable ones stop start-up
    name: f"mcp_test-{name}-key-R7mKx2PqV9tLw4ZnB8sd"
    for name in ("burst", "other", "a", "b", "flight", "misc")
}


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_with_tools(venv, tmp_path_factory.mktemp("abuse") / "project")


def server_env(project: Path, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_API_KEYS": ",".join(KEYS.values()),
        "MCP_RATE_LIMIT": f"{LIMIT}/minute",
        "MCP_TRUSTED_PROXIES": "127.0.0.1",  # so tests can speak for many addresses via X-Forwarded-For
        "MCP_SECURITY_EVENTS_URL": "memory://",
        "MCP_MAX_RESULT_CHARS": "1000",
        "MCP_MAX_CALLS_IN_FLIGHT": "2",
        "MCP_AUTH_FAILURE_THRESHOLD": str(LIMIT),
        "MCP_SECURITY_EVENTS_PER_SOURCE": "100000/minute",  # these tests count every refusal's own row
        **extra,
    }


@pytest.fixture(scope="module")
def server(venv: Venv, project: Path) -> Iterator[Server]:
    with running_server(venv, project, server_env(project)) as running:
        yield running


def events(server: Server, name: str | None = None) -> list[dict[str, Any]]:
    found = [
        json.loads(line) for line in server.log().splitlines() if line.startswith('{"logger":"security"')
    ]
    return [event for event in found if name is None or event["event"] == name]


async def call_tool(
    http: httpx2.AsyncClient,
    server: Server,
    key: str | None,
    name: str,
    arguments: dict[str, Any] | None = None,
    address: str | None = None,
) -> httpx2.Response:
    body = jsonrpc("tools/call", {"name": name, "arguments": arguments or {}})
    return await post_mcp_async(http, server, body, key, address)


async def burst(count: int, make: Any) -> list[httpx2.Response]:
    responses: list[httpx2.Response] = []

    async def one() -> None:
        responses.append(await make())

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return responses


def tool_ok(response: httpx2.Response) -> bool:
    return response.status_code == 200 and not response.json()["result"].get("isError")


async def test_burst_of_3n_from_one_principal_gets_exactly_n(server: Server) -> None:
    async with httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=3 * LIMIT)) as http:
        responses = await burst(3 * LIMIT, lambda: call_tool(http, server, KEYS["burst"], "whoami"))
        other = await call_tool(http, server, KEYS["other"], "whoami")
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: LIMIT, 429: 2 * LIMIT}, statuses
    assert all(tool_ok(response) for response in responses if response.status_code == 200)
    refused = [response for response in responses if response.status_code == 429]
    for response in refused:
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["ratelimit-limit"] == str(LIMIT)
        assert response.headers["ratelimit-remaining"] == "0"
        assert response.json()["error"] == "rate_limited"
    allowed = [response for response in responses if response.status_code == 200]
    assert {response.headers["ratelimit-limit"] for response in allowed} == {str(LIMIT)}
    # Another principal, from the same address, is not affected.
    assert tool_ok(other), other.text
    await anyio.sleep(0.2)
    limited = [e for e in events(server, "rate_limit_exceeded") if e["details"].get("scope") == "per-client"]
    assert len(limited) == 2 * LIMIT
    principal = allowed[0].json()["result"]["content"][0]["text"].splitlines()[0].removeprefix("principal: ")
    assert {e["identifier"] for e in limited} == {principal}


async def test_burst_of_3n_failed_logins_from_one_address_gets_exactly_n(server: Server) -> None:
    address, bystander = "198.51.100.7", "198.51.100.8"
    async with httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=3 * LIMIT)) as http:
        assert tool_ok(await call_tool(http, server, KEYS["misc"], "whoami", address=address))
        responses = await burst(
            3 * LIMIT,
            lambda: call_tool(http, server, "mcp_wrong-guess-0123456789abcdef", "whoami", address=address),
        )
        # The address is blocked, but a key already used from it is still served, so colleagues behind
        # one NAT keep working (docs/security.md; test_lockout.py for a key not used from there).
        valid_from_spent = await call_tool(http, server, KEYS["misc"], "whoami", address=address)
        other_address = await call_tool(
            http, server, "mcp_wrong-guess-0123456789abcdef", "whoami", address=bystander
        )
        valid_elsewhere = await call_tool(http, server, KEYS["misc"], "whoami", address=bystander)
    assert Counter(response.status_code for response in responses) == {401: LIMIT, 429: 2 * LIMIT}
    assert tool_ok(valid_from_spent)
    assert other_address.status_code == 401
    assert tool_ok(valid_elsewhere)
    await anyio.sleep(0.2)
    blocked = [e for e in events(server, "client_blocked") if e["identifier"] == address]
    assert [e["severity"] for e in blocked].count("high") == 1  # the block itself
    assert [e["severity"] for e in blocked].count("medium") == 2 * LIMIT  # each refusal


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(venv: Venv, project: Path) -> None:
    # No trusted proxies: a client cannot mint addresses to escape its own limit.
    with running_server(venv, project, server_env(project, MCP_TRUSTED_PROXIES="")) as direct:
        async with httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=3 * LIMIT)) as http:
            addresses = iter(f"203.0.113.{n}" for n in range(3 * LIMIT))
            responses = await burst(
                3 * LIMIT,
                lambda: call_tool(
                    http, direct, "mcp_wrong-guess-0123456789abcdef", "whoami", address=next(addresses)
                ),
            )
        assert Counter(response.status_code for response in responses) == {401: LIMIT, 429: 2 * LIMIT}
        limited = events(direct, "client_blocked")
        assert limited and {e["identifier"] for e in limited} == {"127.0.0.1"}


async def test_shared_tool_limit_counts_every_caller(server: Server) -> None:
    async with http_client(server.url, KEYS["a"]) as first, http_client(server.url, KEYS["b"]) as second:
        results = [
            await first.call_tool("shared_quota", {}),
            await second.call_tool("shared_quota", {}),
            await first.call_tool("shared_quota", {}),
            await second.call_tool("shared_quota", {}),
        ]
    assert [result.is_error for result in results] == [False, False, False, True]
    message = text_of(results[-1])
    assert "Rate limit reached (per-tool, 3 per 1 minute)" in message
    assert "retry after" in message
    event = [e for e in events(server, "rate_limit_exceeded") if e["tool"] == "shared_quota"][-1]
    assert event["details"]["scope"] == "per-tool"
    assert 1 <= event["details"]["retry_after"] <= 60


async def test_per_caller_tool_limit_is_separate_for_each_caller(server: Server) -> None:
    async with http_client(server.url, KEYS["a"]) as first, http_client(server.url, KEYS["b"]) as second:
        mine = [await first.call_tool("own_quota", {}) for _ in range(4)]
        theirs = await second.call_tool("own_quota", {})
    assert [result.is_error for result in mine] == [False, False, False, True]
    assert "retry after" in text_of(mine[-1])
    assert not theirs.is_error


async def test_slow_tool_is_cancelled_at_its_timeout(server: Server, project: Path) -> None:
    started = time.monotonic()
    async with http_client(server.url, KEYS["misc"]) as client:
        result = await client.call_tool("slow_capped", {"seconds": 30, "tag": "capped"})
    elapsed = time.monotonic() - started
    assert result.is_error
    assert "slow_capped timed out after 1 seconds and was cancelled" in text_of(result)
    assert elapsed < 10
    markers = project / "data" / "markers"
    assert (markers / "capped.started").exists()
    assert (markers / "capped.cancelled").exists()
    assert not (markers / "capped.finished").exists()
    await anyio.sleep(0.2)
    event = [e for e in events(server, "tool_execution_failed") if e["tool"] == "slow_capped"][-1]
    assert event["details"]["reason"] == "timeout"
    assert event["details"]["timeout_seconds"] == 1


async def test_default_timeout_applies_to_tools_without_their_own(venv: Venv, project: Path) -> None:
    env = server_env(project, MCP_TOOL_TIMEOUT_SECONDS="0.5")
    with running_server(venv, project, env) as short:
        async with http_client(short.url, KEYS["misc"]) as client:
            result = await client.call_tool("slow", {"seconds": 30, "tag": "default-timeout"})
        assert result.is_error
        assert "timed out after 0.5 seconds" in text_of(result)
        assert (project / "data" / "markers" / "default-timeout.cancelled").exists()


async def test_huge_result_is_cut_with_a_marker(server: Server) -> None:
    async with http_client(server.url, KEYS["misc"]) as client:
        result = await client.call_tool("big", {"chars": 5_000_000})
    assert not result.is_error
    text = text_of(result)
    assert text.startswith("x" * 1000)
    assert text.endswith("[... output truncated at 1000 characters ...]")
    assert len(text) < 1100


async def test_calls_in_flight_are_capped_per_principal(server: Server) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        responses = await burst(
            3, lambda: call_tool(http, server, KEYS["flight"], "slow", {"seconds": 1.5, "tag": "flight"})
        )
        other = await call_tool(http, server, KEYS["other"], "whoami")
    texts = Counter(response.json()["result"]["content"][0]["text"] for response in responses)
    assert texts == {"slept 1.5 seconds": 2, "Too many calls in flight (2); wait for one to finish.": 1}
    assert tool_ok(other)


async def test_body_over_the_limit_is_413(server: Server) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"' + b"x" * 2_000_000 + b'"}}'
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {KEYS['misc']}"}
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(server.url, content=body, headers=headers)
    assert response.status_code == 413


async def test_health_reports_readiness_and_nothing_else(server: Server) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        live = await http.get(server.base + "/health")
        ready = await http.get(server.base + "/health?ready")
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"rate_limit": "ok", "audit": "ok"}}
    assert "server" not in live.headers


@contextlib.asynccontextmanager
async def call_in_flight(
    server: Server, project: Path, tag: str, seconds: int
) -> AsyncIterator[dict[str, httpx2.Response]]:
    """A `slow` call of `seconds`, running when the block starts. A raw request: the MCP client would try
    to reach the stopped server again on exit. Its answer is under "response" when the block ends, unless
    the connection was cut."""
    outcome: dict[str, httpx2.Response] = {}
    async with httpx2.AsyncClient(timeout=30) as http, anyio.create_task_group() as group:

        async def call() -> None:
            with contextlib.suppress(httpx2.HTTPError):
                outcome["response"] = await call_tool(
                    http, server, KEYS["misc"], "slow", {"seconds": seconds, "tag": tag}
                )

        group.start_soon(call)
        started = project / "data" / "markers" / f"{tag}.started"
        with anyio.fail_after(10):
            await eventually(started.exists)
        yield outcome


async def test_sigterm_lets_the_call_in_flight_finish_and_exits_0(venv: Venv, project: Path) -> None:
    with running_server(venv, project, server_env(project, MCP_SHUTDOWN_GRACE_SECONDS="20")) as server:
        async with call_in_flight(server, project, "sigterm", 2) as outcome:
            server.process.send_signal(signal.SIGTERM)
            await anyio.sleep(0.5)
            # It stopped accepting: a new connection is refused while the call is still running.
            with pytest.raises(httpx2.ConnectError):
                async with httpx2.AsyncClient(timeout=2) as fresh:
                    await fresh.get(server.base + "/health")
            assert not (project / "data" / "markers" / "sigterm.finished").exists()
        response = outcome["response"]
        assert tool_ok(response), response.text
        assert response.json()["result"]["content"][0]["text"] == "slept 2 seconds"
        returncode = await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=30))
        assert returncode == 0, server.log()
        assert "Traceback" not in server.log()


async def test_one_ctrl_c_delivered_twice_still_lets_the_call_in_flight_finish(
    venv: Venv, project: Path
) -> None:
    # `uv run ... serve` without a terminal (a supervisor, a CI job, a test harness stopping a process
    # group) passes the group's Ctrl-C on to the server again 200 ms later. uvicorn would take the second
    # one as "force quit" and cut the call short; it is the same Ctrl-C.
    with running_server(venv, project, server_env(project, MCP_SHUTDOWN_GRACE_SECONDS="20")) as server:
        async with call_in_flight(server, project, "twice", 2) as outcome:
            server.process.send_signal(signal.SIGINT)
            await anyio.sleep(0.2)
            server.process.send_signal(signal.SIGINT)
        assert "response" in outcome and tool_ok(outcome["response"]), server.log()
        returncode = await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=30))
        assert returncode == 130, server.log()
        assert "Traceback" not in server.log(), server.log()


async def test_ctrl_c_pressed_again_later_still_forces_the_exit(venv: Venv, project: Path) -> None:
    with running_server(venv, project, server_env(project, MCP_SHUTDOWN_GRACE_SECONDS="20")) as server:
        async with call_in_flight(server, project, "forced", 60):
            server.process.send_signal(signal.SIGINT)
            await anyio.sleep(1.5)
            assert server.process.poll() is None  # still waiting for the call, as the grace period says
            started = time.monotonic()
            server.process.send_signal(signal.SIGINT)
            returncode = await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=30))
        assert time.monotonic() - started < 10, server.log()
        assert returncode != 0
        assert not (project / "data" / "markers" / "forced.finished").exists()


async def test_a_second_ctrl_c_while_the_stopped_server_exits_is_quiet(venv: Venv, project: Path) -> None:
    # A user presses Ctrl-C twice, or `uv run` forwards the terminal's Ctrl-C again 200 ms later: the
    # second one lands after uvicorn has stopped. It must not end the exit with a traceback.
    with running_server(venv, project, server_env(project)) as server:
        server.process.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            await eventually(
                lambda: "Finished server process" in server.log() or server.process.poll() is not None, 0.001
            )
            while server.process.poll() is None:
                server.process.send_signal(signal.SIGINT)
                await anyio.sleep(0.002)
        assert server.process.returncode == 130, server.log()
        assert "Traceback" not in server.log() and "KeyboardInterrupt" not in server.log(), server.log()


async def test_sigterm_cancels_what_outlives_the_grace_period_and_exits_0(venv: Venv, project: Path) -> None:
    with running_server(venv, project, server_env(project, MCP_SHUTDOWN_GRACE_SECONDS="1")) as server:
        async with call_in_flight(server, project, "overdue", 60) as outcome:
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            returncode = await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=30))
        # uvicorn's answer to a request it had to cancel, if the connection was not cut first
        assert "response" not in outcome or outcome["response"].status_code == 500, outcome
        assert returncode == 0, server.log()
        assert time.monotonic() - started < 10
        assert (project / "data" / "markers" / "overdue.cancelled").exists()
        assert not (project / "data" / "markers" / "overdue.finished").exists()
