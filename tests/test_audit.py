"""The audit trail for real: rendered servers, real requests, events read back through /security/events.

One event per decision at every layer; pagination that never repeats or skips; no secret in any
event, log line or response; SQLite durable across SIGKILL; exact event counts under load; stdout of
the stdio transport carrying nothing but JSON-RPC.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import subprocess
import time
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
    clean_env,
    client_key,
    jsonrpc,
    key_holder,
    package_of,
    post_mcp,
    read_env_file,
    running_server,
    start_server,
)

pytestmark = pytest.mark.anyio

PLANTED = "planted-Secret-7f3a9c2e41d0-5b8e2d6c9a1f"  # a configured secret, never to be written anywhere
WRONG_KEY = "mcp_not-a-key-000000000000000000000000"
HIGH_LIMITS = {
    "MCP_RATE_LIMIT": "1000000/minute",
    "MCP_AUTH_FAILURE_THRESHOLD": "1000000",
    "MCP_SECURITY_EVENTS_PER_SOURCE": "1000000/minute",  # these tests count every refusal's own row
}


def keys(server: Server) -> tuple[str, str]:
    """The tool and admin keys the server was started with (not .env as it is now)."""
    return client_key(server.env), server.env["MCP_ADMIN_API_KEYS"]


def env_keys(project: Path) -> tuple[str, str]:
    """The tool and admin keys in the project's .env (for a test that starts its own server from it)."""
    env = read_env_file(project)
    return client_key(env), env["MCP_ADMIN_API_KEYS"]


def server_env(project: Path, db: Path, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_SECURITY_EVENTS_URL": f"sqlite:///{db}",
        "MCP_REQUEST_STATE_KEYS": PLANTED,  # a secret setting every project has
        **HIGH_LIMITS,
        **extra,
    }


def get_events(server: Server, token: str | None, **params: Any) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.get(server.base + "/security/events", params=params, headers=headers, timeout=30)


def all_events(server: Server, admin: str, limit: int = 500, **params: Any) -> list[dict[str, Any]]:
    """Every event, page by page through next_cursor."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = get_events(server, admin, **query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"events", "next_cursor"}
        events.extend(body["events"])
        cursor = body["next_cursor"]
        if cursor is None:
            return events


def call(name: str = "whoami", arguments: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    return jsonrpc("tools/call", {"name": name, "arguments": arguments or {}}, id=id)


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("both")


@pytest.fixture(scope="module")
def server(project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("audit") / "events.db"
    with running_server(venv, project, server_env(project, db)) as running:
        yield running


# ---- each event type, read back -------------------------------------------------------------------


async def test_each_refusal_and_call_writes_one_event_read_back_by_admin(
    server: Server, project: Path
) -> None:
    tool_key, admin = keys(server)
    before = len(all_events(server, admin))
    expected = [
        (lambda: post_mcp(server, call(id=101), tool_key), 200, "tool_called"),
        (lambda: post_mcp(server, call(id=102)), 401, "authentication_failed"),
        (lambda: post_mcp(server, call(id=103), WRONG_KEY), 401, "authentication_failed"),
        (lambda: get_events(server, tool_key), 403, "authorization_denied"),
        (
            lambda: post_mcp(server, call(arguments={"extra": 1}, id=104), tool_key),
            200,
            "input_validation_failed",
        ),
        (lambda: post_mcp(server, call("no_such_tool", id=105), tool_key), 200, "input_validation_failed"),
        (
            lambda: post_mcp(server, call(id=106), tool_key, headers={"Origin": "https://evil.example"}),
            403,
            "untrusted_origin_blocked",
        ),
        (
            lambda: httpx2.post(
                server.url,
                content=b"x" * 1_100_000,
                headers={**MCP_HEADERS, "Authorization": f"Bearer {tool_key}"},
                timeout=30,
            ),
            413,
            "http_error",
        ),
        (
            lambda: httpx2.post(
                server.url,
                content=b"{not json",
                headers={**MCP_HEADERS, "Authorization": f"Bearer {tool_key}"},
                timeout=30,
            ),
            400,
            "http_error",
        ),
        (
            lambda: httpx2.get(server.base + "/nowhere", headers={"Authorization": f"Bearer {tool_key}"}),
            404,
            "http_error",
        ),
    ]
    for send, status, _ in expected:
        response = await anyio.to_thread.run_sync(send)
        assert response.status_code == status, response.text
    events = all_events(server, admin)[before:]
    assert [event["event"] for event in events] == [name for _, _, name in expected]
    for event in events:
        assert set(event) == {
            "id",
            "timestamp",
            "event",
            "severity",
            "identifier",
            "tool",
            "request_id",
            "details",
        }
        assert event["severity"] in {"low", "medium", "high", "critical"}
        assert event["timestamp"].endswith("Z")
    called = events[0]
    assert called["tool"] == "whoami" and called["request_id"] == "101"
    assert called["identifier"] == key_holder(server.env)  # the name the copy gave the key
    assert called["details"]["outcome"] == "ok" and called["details"]["duration_ms"] >= 0
    assert called["details"]["arguments"] == {}
    # Filters: by name, by minimum severity, by time.
    refused = all_events(server, admin, event="authentication_failed")
    assert {e["id"] for e in events[1:3]} <= {e["id"] for e in refused}
    assert all(e["event"] == "authentication_failed" for e in refused)
    medium_up = all_events(server, admin, severity="medium")
    assert all(e["severity"] in {"medium", "high", "critical"} for e in medium_up)
    assert called["id"] not in {e["id"] for e in medium_up}
    later = all_events(server, admin, since=events[4]["timestamp"])
    assert [e["id"] for e in later][: len(events) - 4] == [e["id"] for e in events[4:]]


async def test_the_events_endpoint_needs_the_admin_key(server: Server, project: Path) -> None:
    tool_key, admin = keys(server)
    assert get_events(server, None).status_code == 401
    assert get_events(server, WRONG_KEY).status_code == 401
    denied = get_events(server, tool_key)
    assert denied.status_code == 403
    assert "events" not in denied.json()
    assert get_events(server, admin).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 501},
        {"limit": 0},
        {"limit": "ten"},
        {"severity": "urgent"},
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},
        {"cursor": "not a cursor"},
        {"cursor": "eHl6"},
        {"event": "x" * 65},
        {"sort": "asc"},
    ],
)
async def test_bad_queries_are_400_with_a_message(
    server: Server, project: Path, params: dict[str, Any]
) -> None:
    _, admin = keys(server)
    before = len(all_events(server, admin, event="http_error"))
    response = get_events(server, admin, **params)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "Traceback" not in response.text
    refusals = all_events(server, admin, event="http_error")
    assert len(refusals) == before + 1  # the refusal is audited too
    assert refusals[-1]["details"]["path"] == "/security/events"
    assert refusals[-1]["details"]["status"] == 400


# ---- pagination -----------------------------------------------------------------------------------


async def test_pagination_returns_every_event_once_while_events_keep_arriving(
    server: Server, project: Path
) -> None:
    tool_key, admin = keys(server)
    for i in range(30):
        post_mcp(server, call(id=2000 + i), tool_key)
    stop, arriving = anyio.Event(), anyio.Event()
    written = 0

    async def keep_writing() -> None:
        nonlocal written
        async with httpx2.AsyncClient(headers={**MCP_HEADERS, "Authorization": f"Bearer {tool_key}"}) as http:
            while not stop.is_set() and written < 100:  # bounded, so the pager can catch up
                await http.post(server.url, json=call(id=3000 + written), timeout=30)
                written += 1
                if written >= 5:
                    arriving.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(keep_writing)
        with anyio.fail_after(30):
            await arriving.wait()  # paging starts while events are arriving
        # Small pages, following next_cursor until it is null, while events keep arriving.
        seen = await anyio.to_thread.run_sync(functools.partial(all_events, server, admin, limit=7))
        stop.set()
    assert written > 0, "no event arrived while paging"
    ids = [event["id"] for event in seen]
    assert len(ids) == len(set(ids)), "an event came twice"
    everything = [event["id"] for event in all_events(server, admin)]
    assert everything[: len(ids)] == ids, "an event was skipped or out of order"


async def test_newest_first_pages_back_and_its_cursor_keeps_its_order(server: Server, project: Path) -> None:
    tool_key, admin = keys(server)
    for i in range(12):
        post_mcp(server, call(id=8000 + i), tool_key)
    oldest_first = [event["id"] for event in all_events(server, admin)]
    newest_first = [event["id"] for event in all_events(server, admin, limit=5, order="desc")]
    assert newest_first == oldest_first[::-1]
    top = get_events(server, admin, order="desc", limit=1).json()["events"][0]
    assert (top["event"], top["request_id"]) == ("tool_called", "8011")  # the last call made
    # A page's cursor goes on to older events; one that arrives in between is not among them.
    page = get_events(server, admin, order="desc", limit=3).json()
    post_mcp(server, call(id=8100), tool_key)
    following = get_events(server, admin, order="desc", limit=3, cursor=page["next_cursor"]).json()
    assert [event["id"] for event in page["events"] + following["events"]] == newest_first[:6]
    # A bad order, or a cursor used with the other order, is a 400 that says so (never a wrong page).
    for params, says in (
        ({"order": "newest"}, "order must be asc (oldest first, the default) or desc (newest first)"),
        ({"cursor": page["next_cursor"]}, "cursor was issued for order=desc; pass it with the same order"),
        ({"order": "desc", "cursor": all_page_cursor(server, admin)}, "cursor was issued for order=asc"),
    ):
        refused = get_events(server, admin, **params)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_request", refused.text
        assert refused.json()["message"].startswith(says), refused.text


def all_page_cursor(server: Server, admin: str) -> str:
    cursor = get_events(server, admin, limit=1).json()["next_cursor"]
    assert cursor
    return str(cursor)


# ---- secrets --------------------------------------------------------------------------------------


async def test_a_planted_secret_never_reaches_an_event_a_log_line_or_a_response(
    server: Server, project: Path
) -> None:
    tool_key, admin = keys(server)
    responses = [
        post_mcp(server, call(id=401), PLANTED),
        post_mcp(server, call(id=402), f"{WRONG_KEY}{PLANTED}"),
        post_mcp(
            server, call(id=403), tool_key, headers={"X-Api-Key": PLANTED, "Cookie": f"session={PLANTED}"}
        ),
        post_mcp(
            server,
            call(arguments={"password": PLANTED, "note": f"use {PLANTED} here", PLANTED: 1}, id=404),
            tool_key,
        ),
        post_mcp(server, call(PLANTED, id=405), tool_key),
        post_mcp(server, call(id=406), tool_key, headers={"Origin": f"https://{PLANTED}.example"}),
        httpx2.get(server.url, params={"api_key": PLANTED}, timeout=30),
        httpx2.get(server.url, params={"token": tool_key}, timeout=30),
        post_mcp(server, call(id=407), headers={"Authorization": f"Basic {PLANTED}"}),
    ]
    statuses = [response.status_code for response in responses]
    assert statuses == [401, 401, 200, 200, 200, 403, 401, 401, 401]
    events_text = json.dumps(all_events(server, admin))
    assert "[redacted]" in events_text  # the planted values were there to be found, and were scrubbed
    response_text = "\n".join(f"{r.headers}\n{r.text}" for r in responses)
    await anyio.sleep(0.2)  # let the last log lines reach the file
    log_text = server.log()
    for secret in (PLANTED, tool_key, admin):
        assert secret not in events_text
        assert secret not in log_text
        assert secret not in response_text


# ---- durability and exact counts ------------------------------------------------------------------


async def test_sqlite_keeps_every_acknowledged_event_across_sigkill(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    tool_key, admin = env_keys(project)
    db = tmp_path / "events.db"
    victim = start_server(venv, project, server_env(project, db), log_dir=tmp_path)
    acked: set[str] = set()
    enough_acked = anyio.Event()
    next_id = iter(range(10_000, 100_000))

    async def burst() -> None:
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {tool_key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            while True:
                request_id = next(next_id)
                try:
                    response = await http.post(victim.url, json=call(id=request_id))
                    body = response.json()
                except (httpx2.HTTPError, ValueError):
                    return  # the server is gone
                assert body["id"] == request_id
                acked.add(str(request_id))
                if len(acked) >= 300:
                    enough_acked.set()

    async with anyio.create_task_group() as tasks:
        for _ in range(16):
            tasks.start_soon(burst)
        with anyio.fail_after(60):
            await enough_acked.wait()
        victim.process.kill()  # SIGKILL in the middle of the burst
    victim.process.wait(timeout=10)
    with running_server(venv, project, server_env(project, db), log_dir=tmp_path) as again:
        stored = {event["request_id"] for event in all_events(again, admin)}
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    # The hash chain survives the kill: the restarted server went on from the last stored row.
    log = tmp_path / "after-restart.log"
    log.write_text(again.log())
    command, _ = package_of(project)
    verify = (venv.bin(command), "audit", "verify", f"sqlite:///{db}", "--log", str(log))
    verified = venv.run(*verify, cwd=project)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with contextlib.closing(sqlite3.connect(db)) as file:  # the newest event removed: the head logged at
        file.execute("DELETE FROM security_events WHERE seq = (SELECT MAX(seq) FROM security_events)")
        file.commit()  # shutdown is no longer in the trail
    cut = venv.run(*verify, cwd=project)
    assert cut.returncode == 1 and "BROKEN: the tail was truncated" in cut.stdout, cut.stdout


async def test_under_50_concurrent_clients_events_equal_decisions(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    """50 clients on one address, half of their requests authenticated: every decision is accounted for.

    The unauthenticated half is a flood from 127.0.0.1: beyond its budget its refusals are folded into
    `events_aggregated` events that carry their count (issue 17); the authenticated half is never folded,
    one row per decision. The ~350 invalid calls of one principal are a refusal burst: one
    `anomaly_detected` per anomaly window (issue 16), an observation on top of the decisions.
    """
    tool_key, admin = env_keys(project)
    budget = 100
    env = server_env(project, tmp_path / "events.db", MCP_SECURITY_EVENTS_PER_SOURCE=f"{budget}/3 seconds")
    decisions = {"authenticated": 0, "unauthenticated": 0}
    statuses: dict[int, int] = {}
    requests = [
        (tool_key, call()),  # a tool call, or a refusal for too many calls in flight
        (None, call()),  # 401
        (tool_key, call(arguments={"unexpected": 1})),  # invalid arguments
        (WRONG_KEY, call()),  # 401
    ]
    with running_server(venv, project, env, log_dir=tmp_path) as server:
        deadline = time.monotonic() + 10

        async def client(number: int) -> None:
            async with httpx2.AsyncClient(headers=MCP_HEADERS, timeout=60) as http:
                turn = number
                while time.monotonic() < deadline:
                    token, body = requests[turn % len(requests)]
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    response = await http.post(server.url, json=body, headers=headers)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    decisions["authenticated" if token == tool_key else "unauthenticated"] += 1
                    turn += 1

        async with anyio.create_task_group() as tasks:
            for number in range(50):
                tasks.start_soon(client, number)

        def folded(events: list[dict[str, Any]]) -> int:
            return sum(e["details"]["total"] for e in events if e["event"] == "events_aggregated")

        # The last window's aggregate is written when that window ends (at most 3 s after the burst).
        events = all_events(server, admin)
        until = time.monotonic() + 15
        while (
            time.monotonic() < until
            and folded(events) + sum(e["event"] == "authentication_failed" for e in events)
            < decisions["unauthenticated"]
        ):
            await anyio.sleep(0.5)
            events = all_events(server, admin)
    assert sum(decisions.values()) > 100, statuses
    assert set(statuses) == {200, 401}, statuses
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_kind.setdefault(event["event"], []).append(event)
    principals = {e["identifier"] for e in by_kind["tool_called"]}
    assert len(principals) == 1 and "127.0.0.1" not in principals
    authenticated = [e for e in events if e["identifier"] in principals and e["event"] != "anomaly_detected"]
    assert {e["event"] for e in authenticated} <= {
        "tool_called",
        "input_validation_failed",
        "rate_limit_exceeded",
    }
    assert len(authenticated) == decisions["authenticated"], statuses  # never folded
    # Unauthenticated: a row each up to the budget per window, the rest counted in the aggregates.
    aggregates = by_kind.get("events_aggregated", [])
    rows = by_kind["authentication_failed"]
    assert aggregates, "no unauthenticated refusal was folded: the per-source budget did not apply"
    assert {e["identifier"] for e in rows + aggregates} == {"127.0.0.1"}
    assert all(set(e["details"]["folded"]) == {"authentication_failed"} for e in aggregates)
    assert len(rows) + folded(events) == decisions["unauthenticated"], statuses
    assert len(rows) <= budget * (len(aggregates) + 1)
    # The refusal burst: one anomaly per 60 s window the burst reached 20 refusals in (a 10 s burst
    # touches one window, or two when a window boundary falls inside it).
    anomalies = by_kind["anomaly_detected"]
    assert 1 <= len(anomalies) <= 2, anomalies
    for anomaly in anomalies:
        assert anomaly["identifier"] in principals and anomaly["severity"] == "high"
        assert anomaly["details"]["rule"] == "refusal_burst"
        assert anomaly["details"]["refusals"] == anomaly["details"]["threshold"] == 20
    assert set(by_kind) - {"rate_limit_exceeded"} == {  # too many calls in flight, if it happened
        "tool_called",
        "input_validation_failed",
        "authentication_failed",
        "events_aggregated",
        "anomaly_detected",
    }


# ---- anomaly response, rate limits, start-up --------------------------------------------------------


async def test_repeated_auth_failures_block_the_client_for_every_failing_request(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    # What a blocked address gets for a right key: test_lockout.py and test_hardening.py.
    _, admin = env_keys(project)
    db = tmp_path / "events.db"
    tight = server_env(
        project,
        db,
        MCP_RATE_LIMIT="5/minute",
        MCP_AUTH_FAILURE_THRESHOLD="2",
        MCP_AUTH_FAILURE_WINDOW_SECONDS="60",
        MCP_AUTH_BLOCK_SECONDS="600",
    )
    with running_server(venv, project, tight, log_dir=tmp_path) as strict:
        answers = [post_mcp(strict, call(id=i), WRONG_KEY) for i in range(4)]
        answers.append(post_mcp(strict, call(id=9)))
    # No credential is no failed login: the blocked address still gets the challenge (issue 29).
    assert [a.status_code for a in answers] == [401, 401, 429, 429, 401]
    assert [a.json()["error"] for a in answers[2:4]] == ["client_blocked"] * 2
    assert int(answers[2].headers["retry-after"]) > 500
    # Read back with a fresh server on the same store (this address is still blocked on the old one).
    with running_server(venv, project, server_env(project, db), log_dir=tmp_path) as reader:
        events = all_events(reader, admin)
    assert [(e["event"], e["severity"]) for e in events] == [
        ("authentication_failed", "medium"),
        ("authentication_failed", "medium"),
        ("client_blocked", "high"),
        ("client_blocked", "medium"),  # a blocked address's key is not even checked
        ("client_blocked", "medium"),
        ("authentication_failed", "medium"),  # the request without a credential: challenged
    ]
    blocked = events[2]
    assert blocked["identifier"] == "127.0.0.1"
    assert blocked["details"]["block_seconds"] == 600
    assert not any(e["event"] == "tool_called" for e in events), "a blocked client reached a tool"


async def test_an_unopenable_store_stops_start_up_with_the_fix(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    command, _ = package_of(project)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = venv.run(
        venv.bin(command),
        "serve",
        "--transport",
        "http",
        cwd=project,
        env={**read_env_file(project), "MCP_SECURITY_EVENTS_URL": f"sqlite:///{blocker}/events.db"},
        timeout=60,
    )
    assert result.returncode != 0
    assert "MCP_SECURITY_EVENTS_URL" in result.stderr
    assert "Traceback" not in result.stderr


# ---- stdio: stdout is the protocol -----------------------------------------------------------------


def test_stdio_stdout_carries_only_json_rpc_and_events_go_to_stderr(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    command, _ = package_of(project)
    messages = [
        jsonrpc(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
            id=1,
        ),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        jsonrpc("tools/list", id=2),
        call(id=3),
        call(arguments={"password": PLANTED}, id=4),
        call("no_such_tool", id=5),
    ]
    stdin = "".join(json.dumps(message) + "\n" for message in messages)
    process = subprocess.Popen(
        [venv.bin(command), "serve", "--transport", "stdio"],
        cwd=project,
        env=clean_env(
            {"MCP_UPSTREAM_API_KEY": PLANTED, "MCP_SECURITY_EVENTS_URL": f"sqlite:///{tmp_path}/events.db"}
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(stdin.encode())
    process.stdin.flush()
    # Wait for the five answers before closing stdin, so no request is cut short.
    lines: list[str] = []
    while len(lines) < 5:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.decode())
    stdout_rest, stderr = process.communicate(timeout=30)
    lines += stdout_rest.decode().splitlines(keepends=True)
    for line in lines:
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0", line
    answers = {message["id"]: message for message in map(json.loads, lines) if "id" in message}
    assert set(answers) == {1, 2, 3, 4, 5}
    assert answers[3]["result"]["isError"] is False
    assert answers[4]["result"]["isError"] is True and answers[5]["result"]["isError"] is True
    events = [
        json.loads(line) for line in stderr.decode().splitlines() if line.startswith('{"logger":"security"')
    ]
    # stdio handles requests concurrently: the refusals may be written before the call's event.
    assert sorted(event["event"] for event in events) == [
        "input_validation_failed",
        "input_validation_failed",
        "tool_called",
    ]
    assert PLANTED not in stderr.decode() and PLANTED not in "".join(lines)
    heads = [
        json.loads(line)["audit_chain_head"]
        for line in stderr.decode().splitlines()
        if line.startswith('{"logger":"audit"')
    ]
    # The audit chain's head once with the first event written, then as the server leaves it.
    assert len(heads) == 2 and heads[-1][0].startswith("events:3:"), heads
