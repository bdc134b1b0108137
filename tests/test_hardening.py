"""Issue 17, attacked for real: audit floods, slowloris, ambiguous framing, shared-address lockout, Host,
cursors.

Each test starts a rendered server (uvicorn on a loopback port) with the settings it attacks, sends a
bounded load (counted, on loopback only) and reads what the server stored back through /security/events.
"""

from __future__ import annotations

import asyncio
import base64
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from support import (
    MCP_HEADERS,
    Server,
    Venv,
    client_key,
    jsonrpc,
    post_mcp,
    post_mcp_async,
    read_env_file,
    running_server,
)
from support.perimeter import SECURITY_HEADERS, EventWatch

pytestmark = pytest.mark.anyio

WRONG_KEY = "mcp_not-a-key-000000000000000000000000"
CALL = jsonrpc("tools/call", {"name": "whoami", "arguments": {}})
UNLIMITED = {"MCP_RATE_LIMIT": "1000000/minute", "MCP_AUTH_FAILURE_THRESHOLD": "1000000"}


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("both")


def env_of(project: Path, db: Path, **extra: str) -> dict[str, str]:
    return {**read_env_file(project), "MCP_SECURITY_EVENTS_URL": f"sqlite:///{db}", **extra}


def keys(project: Path) -> tuple[str, str]:
    env = read_env_file(project)
    return client_key(env), env["MCP_ADMIN_API_KEYS"]


def stored(server: Server, admin: str, **params: Any) -> list[dict[str, Any]]:
    """Every stored event, page by page."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 500, **params, **({"cursor": cursor} if cursor else {})}
        response = httpx2.get(
            server.base + "/security/events", params=query, headers={"Authorization": f"Bearer {admin}"}
        )
        assert response.status_code == 200, response.text
        found += response.json()["events"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return found


async def flood(server: Server, count: int, *, concurrency: int = 16, spread: bool = False) -> dict[int, int]:
    """`count` POSTs with a wrong key; `spread`: each from its own X-Forwarded-For address."""
    statuses: dict[int, int] = {}
    queue = iter(range(count))

    async def worker(client: httpx2.AsyncClient) -> None:
        for index in queue:
            address = f"10.{index >> 16}.{(index >> 8) & 255}.{index & 255}" if spread else None
            response = await post_mcp_async(client, server, CALL, WRONG_KEY, address)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    async with httpx2.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return statuses


# ---- 1, 2: the audit flood ----------------------------------------------------------------------------


async def test_a_flood_from_one_address_is_folded_into_counted_aggregates(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    _, admin = keys(project)
    db = tmp_path / "events.db"
    env = env_of(project, db, **UNLIMITED, MCP_SECURITY_EVENTS_PER_SOURCE="20/minute")
    with running_server(venv, project, env, log_dir=tmp_path) as server:
        assert await flood(server, 300) == {401: 300}
        server.stop()  # the aggregate of the window still open is written at shutdown
    with running_server(venv, project, env_of(project, db), log_dir=tmp_path) as reader:
        events = stored(reader, admin)
    one_by_one = [e for e in events if e["event"] == "authentication_failed"]
    aggregates = [e for e in events if e["event"] == "events_aggregated"]
    assert len(one_by_one) == 20, len(events)
    assert len(aggregates) == 1, aggregates
    assert aggregates[0]["identifier"] == "127.0.0.1"
    assert aggregates[0]["details"]["folded"] == {"authentication_failed": 280}
    assert aggregates[0]["details"]["total"] == 280


async def test_each_window_ends_with_its_aggregate_and_no_refusal_goes_uncounted(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    _, admin = keys(project)
    env = env_of(project, tmp_path / "events.db", **UNLIMITED, MCP_SECURITY_EVENTS_PER_SOURCE="10/second")
    with running_server(venv, project, env, log_dir=tmp_path) as server:
        assert await flood(server, 400, concurrency=4) == {401: 400}
        await asyncio.sleep(2.5)  # the last window's timer writes its aggregate
        events = stored(server, admin, event="authentication_failed")
        aggregates = stored(server, admin, event="events_aggregated")
    folded = sum(a["details"]["folded"]["authentication_failed"] for a in aggregates)
    assert len(events) + folded == 400, (len(events), folded)
    assert aggregates and len(events) < 400


async def test_wal_stays_bounded_and_a_refusal_flood_evicts_no_principal_event(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    tool_key, admin = keys(project)
    db = tmp_path / "events.db"
    env = env_of(
        project,
        db,
        **UNLIMITED,
        MCP_TRUSTED_PROXIES="127.0.0.1",
        MCP_SECURITY_EVENTS_MAX_ROWS="1000",
        MCP_SECURITY_EVENTS_MAX_ANONYMOUS_ROWS="1000",
    )
    wal = Path(str(db) + "-wal")
    largest = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal largest
        while not done.is_set():
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            time.sleep(0.02)

    with running_server(venv, project, env, log_dir=tmp_path) as server:
        assert post_mcp(server, CALL, tool_key).status_code == 200
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            statuses = await flood(server, 6_000, concurrency=32, spread=True)
        finally:
            done.set()
            watcher.join()
        assert statuses == {401: 6_000}
        events = stored(server, admin)
    # ~18 KiB of WAL per event: 6,000 events unbounded would be ~110 MiB.
    assert largest < 32 * 1_048_576, f"WAL reached {largest / 1_048_576:.1f} MiB"
    print(f"largest WAL during a 6,000-event flood: {largest / 1_048_576:.1f} MiB")
    assert [e["event"] for e in events if e["event"] == "tool_called"] == ["tool_called"]
    refusals = [e for e in events if e["event"] == "authentication_failed"]
    assert 1_000 <= len(refusals) <= 2_000, len(refusals)  # pruned to its cap every 1,000 writes


# ---- 3: connections that never finish a request --------------------------------------------------------


def held_connection(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    if payload:
        sock.sendall(payload)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_slowloris_connections_are_capped_timed_out_and_an_honest_client_is_answered(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    tool_key, _ = keys(project)
    env = env_of(
        project,
        tmp_path / "events.db",
        MCP_HEADER_TIMEOUT_SECONDS="2",
        MCP_BODY_TIMEOUT_SECONDS="2",
        MCP_MAX_CONNECTIONS_PER_ADDRESS="20",
        MCP_SECURITY_EVENTS_PER_SOURCE="100000/minute",  # every refusal one row, to count them here
    )
    with running_server(venv, project, env, log_dir=tmp_path) as server:
        resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (150, 150))
        watch = EventWatch(server)
        partial = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        slow_body = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{"
        held = [
            held_connection(server.port, b"" if i % 3 == 0 else partial if i % 3 == 1 else slow_body)
            for i in range(150)
        ]
        try:
            time.sleep(0.5)
            # An honest client from another address is answered while the 150 are held.
            transport = httpx2.HTTPTransport(local_address="127.0.0.2")
            with httpx2.Client(transport=transport, timeout=5) as honest:
                health = honest.get(server.base + "/health")
                call = honest.post(
                    server.url, json=CALL, headers={**MCP_HEADERS, "Authorization": f"Bearer {tool_key}"}
                )
            assert health.status_code == 200
            assert call.status_code == 200, call.text
            # Every held connection is closed by the server: beyond the cap at once, the rest at their
            # deadline.
            assert all(closed_by_server(sock, 4.0) for sock in held)
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.5)
        capped = watch.new("client_blocked")
        errors = watch.new("http_error")
        timed_out = [e for e in errors if e["details"].get("status") == 408]
        # A burst may use up the descriptors before the caps see it (connections.py): accept() failures
        # are then one log line and one event a second, not a traceback per waiting connection.
        out_of_descriptors = [e for e in errors if e["details"].get("status") == 503]
        assert all(e["identifier"] == "server" and e["severity"] == "high" for e in out_of_descriptors)
        log = server.log()
        assert "socket.accept() out of system resource" not in log
        assert log.count("cannot accept connections") == len(out_of_descriptors) <= 10
    assert len(capped) == 130, len(capped)
    assert {e["details"]["reason"] for e in capped} == {"too many connections from this address"}
    assert len(timed_out) == 20, len(timed_out)
    reasons = {e["details"]["reason"] for e in timed_out}
    assert reasons <= {"request headers not received in time", "request body not received in time"}


# ---- 4: ambiguous framing and malformed requests --------------------------------------------------------


def raw_exchange(server: Server, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"connection kept open after: {received[:300]!r}") from None
            if not chunk:
                return received
            received += chunk


@pytest.fixture(scope="module")
def server(project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hardening")
    with running_server(venv, project, env_of(project, tmp / "events.db"), log_dir=tmp) as running:
        yield running


def test_content_length_with_transfer_encoding_is_400_and_closes_the_connection(
    server: Server, project: Path
) -> None:
    tool_key, _ = keys(project)
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
    smuggled = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    request = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + tool_key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        b"Content-Length: "
        + str(len(body) + 200).encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}".encode()
        + b"\r\n"
        + body
        + b"\r\n0\r\n\r\n"
    )
    watch = EventWatch(server)
    answer = raw_exchange(server, request + smuggled)
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the pipelined request behind it is never answered
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 400"), head
    assert "connection: close" in head
    for name, value in SECURITY_HEADERS.items():
        assert f"{name}: {value.lower()}" in head
    time.sleep(0.3)
    assert [e["details"]["reason"] for e in watch.new("http_error")] == [
        "both Content-Length and Transfer-Encoding"
    ]


def test_a_malformed_request_gets_400_with_security_headers_and_an_event(server: Server) -> None:
    watch = EventWatch(server)
    answer = raw_exchange(server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nNo colon here\r\n\r\n")
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 400"), head
    for name, value in SECURITY_HEADERS.items():
        assert f"{name}: {value.lower()}" in head
    time.sleep(0.3)
    assert [e["details"]["status"] for e in watch.new("http_error")] == [400]


# ---- 8: a blocked address still admits the keys it was already using -------------------------------------


def test_a_key_already_used_is_admitted_from_a_blocked_address_while_others_stay_refused(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    tool_key, admin = keys(project)
    env = env_of(
        project,
        tmp_path / "events.db",
        MCP_AUTH_FAILURE_THRESHOLD="3",
        MCP_AUTH_BLOCK_SECONDS="600",
        MCP_RATE_LIMIT="1000/minute",
    )
    with running_server(venv, project, env, log_dir=tmp_path) as blocked:
        assert post_mcp(blocked, CALL, tool_key).status_code == 200  # in use before the block
        bad = [post_mcp(blocked, CALL, WRONG_KEY).status_code for _ in range(5)]
        good = post_mcp(blocked, CALL, tool_key)
        events = httpx2.get(blocked.base + "/security/events", headers={"Authorization": f"Bearer {admin}"})
        still_bad = post_mcp(blocked, CALL, WRONG_KEY)
        no_key = post_mcp(blocked, CALL)
    assert bad == [401, 401, 401, 429, 429]
    assert good.status_code == 200 and "result" in good.json(), good.text
    # The admin key was not used from this address before the block: one 429 like any other key.
    assert events.status_code == 429 and events.json()["error"] == "client_blocked"
    assert still_bad.status_code == 429 and still_bad.json()["error"] == "client_blocked"
    assert no_key.status_code == 401  # no credential: the challenge, never the block
    assert int(still_bad.headers["retry-after"]) > 500


# ---- 9, 10: Host port, cursor ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["localhost:1.evil.example", "127.0.0.1:80@evil.example", "localhost:", "localhost:8x"]
)
def test_a_host_with_a_port_that_is_not_a_number_is_421(server: Server, project: Path, host: str) -> None:
    tool_key, _ = keys(project)
    response = post_mcp(server, CALL, tool_key, headers={"Host": host})
    assert response.status_code == 421, (host, response.status_code)
    assert response.json()["error"] == "invalid_host"
    assert post_mcp(server, CALL, tool_key, headers={"Host": f"localhost:{server.port}"}).status_code == 200


@pytest.mark.parametrize("position", ["123-4", "99999999999999999999", "1-2.3-4"])
def test_a_well_formed_cursor_of_no_position_here_is_400_naming_it(
    server: Server, project: Path, position: str
) -> None:
    _, admin = keys(project)
    cursor = base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")
    response = httpx2.get(
        server.base + "/security/events",
        params={"cursor": cursor},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 400, response.text
    assert "cursor" in response.json()["message"]
