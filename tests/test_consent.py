"""Consent for destructive tools (MCP elicitation) for every client era and deployment, and its security.

- 2026-07-28 clients through a plain round-robin balancer over two real replicas: the consent retry
  lands on the other replica, which unseals the requestState with the shared MCP_REQUEST_STATE_KEYS;
  a tampered, expired, another principal's or foreign state is refused and audited.
- initialize-era clients over HTTP: served with a session, so the question rides the call's stream;
  the session belongs to its principal, is bounded, and can be turned off.
- the MCP Inspector CLI (a client nobody here wrote) declares no elicitation, in either era and over
  either transport: delete_note is refused with the reason, and nothing is deleted.
Stdio consent with a client that asks (accept, decline, cancel) is proved in test_tools_notes.py.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.request_state import AESGCMRequestStateCodec
from mcp.shared.exceptions import MCPError
from mcp.types import ElicitResult

from support import BASE, Server, Venv, free_port, package_of, read_env_file, running_server, text_of
from support.node import run_node_tool
from support.projects import installed_project, serving_with_issuer
from support.proxy import running_proxy
from support.redis import running_redis
from support.tooling import Issuer, User, all_events, mcp_over_http

pytestmark = pytest.mark.anyio

BOTH = "notes:read notes:write"
TTL = 4.0


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = {
        **BASE,
        "project_name": "Acme Consent",
        "transport": "both",
        "auth": "oauth",
        "sample_tools": ["notes"],
    }
    return installed_project(venv, tmp_path_factory.mktemp("consent"), answers)


class Replicas:
    def __init__(self, servers: list[Server], url: str, issuer: Issuer, keys: str) -> None:
        self.servers, self.url, self.issuer, self.keys = servers, url, issuer, keys

    def events(self, **filters: str) -> list[dict[str, Any]]:
        # The replicas share one Redis audit trail: either answers for both.
        return all_events(self.servers[0], self.servers[0].env["MCP_ADMIN_API_KEYS"], **filters)


@pytest.fixture(scope="module")
def replicas(project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    base = tmp_path_factory.mktemp("replicas")
    proxy_port = free_port()
    url = f"http://127.0.0.1:{proxy_port}/mcp"
    keys = f"{secrets.token_hex(32)},{secrets.token_hex(32)}"
    with running_redis(base) as redis, Issuer(audience=url) as issuer:
        env = {
            **read_env_file(project),
            **issuer.settings(),
            "MCP_DATA_DIR": str(base),
            "MCP_RATE_LIMIT": "100000/minute",
            "MCP_RATE_LIMIT_STORAGE": redis.url,
            "MCP_SECURITY_EVENTS_URL": redis.url,
            "MCP_REQUEST_STATE_KEYS": keys,
            "MCP_REQUEST_STATE_TTL_SECONDS": str(TTL),
        }
        with (
            running_server(venv, project, env, log_dir=base) as one,
            running_server(venv, project, env, log_dir=base) as two,
            running_proxy(proxy_port, [one.base, two.base], {}, base / "proxy.log"),
        ):
            yield Replicas([one, two], url, issuer, keys)


async def add_note(url: str, token: str, text: str, **kwargs: Any) -> int:
    async with mcp_over_http(url, token, **kwargs) as client:
        added = text_of(await client.call_tool("add_note", {"text": text}))
    return int(added.split("#")[1].rstrip("."))


async def test_modern_client_consents_through_a_round_robin_balancer(replicas: Replicas) -> None:
    token = replicas.issuer.token("dana", BOTH)
    note = await add_note(replicas.url, token, "round robin")
    async with mcp_over_http(replicas.url, token, mode="auto") as client:
        refused = await client.call_tool("delete_note", {"note_id": note})
    assert refused.is_error and "cannot ask" in text_of(refused)
    for user in (User("decline"), User("cancel"), User("accept", confirm=False)):
        async with mcp_over_http(replicas.url, token, mode="auto", elicitation_callback=user) as client:
            refused = await client.call_tool("delete_note", {"note_id": note})
            assert refused.is_error and "did not confirm" in text_of(refused), text_of(refused)
            assert "round robin" in text_of(await client.call_tool("list_notes", {}))
        assert user.asked == [f"Delete note #{note}? This cannot be undone."]
    user = User("accept")
    async with mcp_over_http(replicas.url, token, mode="auto", elicitation_callback=user) as client:
        deleted = await client.call_tool("delete_note", {"note_id": note})
        assert not deleted.is_error, text_of(deleted)
        assert "round robin" not in text_of(await client.call_tool("list_notes", {}))
    # The balancer sends each request to the other replica, so every retry was unsealed by the replica
    # that did not seal it (a per-process key would fail here: "Invalid or expired requestState").


ASKED: dict[str, str] = {}  # the key the server gave its question, so a retry can answer it


async def _first_round(client: Any, note: int) -> str:
    first = await client.session.call_tool("delete_note", {"note_id": note}, allow_input_required=True)
    state = getattr(first, "request_state", None)
    assert state and first.input_requests, first
    ASKED["key"] = next(iter(first.input_requests))
    return str(state)


async def _retry(client: Any, note: int, state: str) -> Any:
    answers = {ASKED["key"]: ElicitResult(action="accept", content={"confirm": True})}
    return await client.session.call_tool(
        "delete_note",
        {"note_id": note},
        input_responses=answers,
        request_state=state,
        allow_input_required=True,
    )


async def test_bad_request_states_are_refused_and_audited(replicas: Replicas) -> None:
    alice, bob = replicas.issuer.token("alice", BOTH), replicas.issuer.token("bob", BOTH)
    note = await add_note(replicas.url, alice, "keep me")
    before = {
        e["id"]
        for e in await anyio.to_thread.run_sync(lambda: replicas.events(event="input_validation_failed"))
    }
    foreign = AESGCMRequestStateCodec([os.urandom(32)]).seal(b'{"v":1}')
    async with mcp_over_http(replicas.url, alice, elicitation_callback=User("accept")) as client:
        state = await _first_round(client, note)
        tampered = state[:-6] + ("AAAAAA" if not state.endswith("AAAAAA") else "BBBBBB")
        attempts = {"tampered": tampered, "foreign": foreign}
        for bad in attempts.values():
            with pytest.raises(MCPError, match="Invalid or expired requestState"):
                await _retry(client, note, bad)
    async with mcp_over_http(replicas.url, bob, elicitation_callback=User("accept")) as client:
        with pytest.raises(MCPError, match="Invalid or expired requestState"):
            await _retry(client, note, state)  # alice's state, replayed by bob
    await anyio.sleep(TTL + 0.5)
    async with mcp_over_http(replicas.url, alice, elicitation_callback=User("accept")) as client:
        with pytest.raises(MCPError, match="Invalid or expired requestState"):
            await _retry(client, note, state)  # expired
        assert "keep me" in text_of(await client.call_tool("list_notes", {}))
    events = await anyio.to_thread.run_sync(lambda: replicas.events(event="input_validation_failed"))
    refused = [
        e for e in events if e["id"] not in before and e["details"].get("reason") == "invalid_request_state"
    ]
    who = sorted(e["identifier"] for e in refused)
    assert who == ["user:alice", "user:alice", "user:alice", "user:bob"], (
        who
    )  # OAuth principals are namespaced
    assert all(e["severity"] == "high" and e["tool"] == "delete_note" for e in refused)


async def test_a_fresh_state_from_the_same_principal_still_works_after_the_refusals(
    replicas: Replicas,
) -> None:
    """The refusals above are not a side effect of a broken consent path."""
    alice = replicas.issuer.token("alice", BOTH)
    note = await add_note(replicas.url, alice, "delete me")
    async with mcp_over_http(replicas.url, alice, elicitation_callback=User("accept")) as client:
        state = await _first_round(client, note)
        done = await _retry(client, note, state)
    assert not done.is_error, text_of(done)


# ---- initialize-era clients: sessions -------------------------------------------------------------

SSE_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


def initialize(url: str, token: str) -> httpx2.Response:
    return httpx2.post(
        url, json=INITIALIZE, headers={**SSE_HEADERS, "Authorization": f"Bearer {token}"}, timeout=30
    )


def in_session(url: str, token: str, session: str, method: str = "POST") -> httpx2.Response:
    headers = {
        **SSE_HEADERS,
        "Authorization": f"Bearer {token}",
        "Mcp-Session-Id": session,
        "Mcp-Protocol-Version": "2025-11-25",
    }
    if method == "GET":
        return httpx2.get(url, headers=headers, timeout=5)
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    return httpx2.post(url, json=body, headers=headers, timeout=30)


async def test_legacy_client_consents_over_http_with_a_session(replicas: Replicas) -> None:
    url = replicas.servers[0].url  # one replica: initialize-era sessions need sticky routing
    token = replicas.issuer.token("erin", BOTH)
    note = await add_note(url, token, "legacy", mode="legacy")
    async with mcp_over_http(url, token, mode="legacy") as client:
        refused = await client.call_tool("delete_note", {"note_id": note})
    assert refused.is_error and "cannot ask" in text_of(refused)
    for user in (User("decline"), User("cancel"), User("accept", confirm=False)):
        async with mcp_over_http(url, token, mode="legacy", elicitation_callback=user) as client:
            refused = await client.call_tool("delete_note", {"note_id": note})
            assert refused.is_error and "did not confirm" in text_of(refused), text_of(refused)
        assert user.asked == [f"Delete note #{note}? This cannot be undone."]
    user = User("accept")
    async with mcp_over_http(url, token, mode="legacy", elicitation_callback=user) as client:
        deleted = await client.call_tool("delete_note", {"note_id": note})
        assert not deleted.is_error, text_of(deleted)
        assert "legacy" not in text_of(await client.call_tool("list_notes", {}))
    assert user.asked == [f"Delete note #{note}? This cannot be undone."]


def test_a_session_belongs_to_the_principal_that_opened_it(replicas: Replicas) -> None:
    server = replicas.servers[0]
    alice, bob = replicas.issuer.token("alice", BOTH), replicas.issuer.token("mallory", BOTH)
    opened = initialize(server.url, alice)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    assert in_session(server.url, alice, session).status_code == 200
    unknown = in_session(server.url, bob, "0" * 32)
    for method in ("POST", "GET"):
        stolen = in_session(server.url, bob, session, method)
        # Exactly what an unknown id gets: the attempt learns nothing about alice's session.
        assert (
            (stolen.status_code, stolen.content)
            == (unknown.status_code, unknown.content)
            == (404, unknown.content)
        ), stolen.text
    assert in_session(server.url, alice, session).status_code == 200
    events = replicas.events(event="authorization_denied")
    mine = [
        e
        for e in events
        if e["identifier"] == "user:mallory"  # OAuth principals are namespaced
        and e["details"].get("reason") == "session of another principal"
    ]
    assert sorted(e["details"]["method"] for e in mine) == ["GET", "POST"]
    assert all(session not in str(e) for e in mine)  # the id itself is never written down


def test_get_and_delete_without_a_session_answer_405(replicas: Replicas) -> None:
    server = replicas.servers[0]
    headers = {**SSE_HEADERS, "Authorization": f"Bearer {replicas.issuer.token('alice', BOTH)}"}
    for method in ("GET", "DELETE"):
        answer = httpx2.request(method, server.url, headers=headers, timeout=5)
        assert answer.status_code == 405 and answer.headers["allow"] == "POST", answer.text


@pytest.fixture(scope="module")
def bounded(
    project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Issuer]]:
    limits = {
        "MCP_MAX_SESSIONS_PER_PRINCIPAL": "2",
        "MCP_MAX_SESSIONS": "3",
        "MCP_SESSION_IDLE_TIMEOUT_SECONDS": "3",
        "MCP_SESSION_MAX_STREAMS": "1",
        "MCP_SESSION_STREAM_IDLE_SECONDS": "1",
    }
    with serving_with_issuer(venv, project, tmp_path_factory.mktemp("bounded"), **limits) as served:
        yield served


def test_sessions_are_capped_per_principal_and_overall_and_expire(bounded: tuple[Server, Issuer]) -> None:
    server, issuer = bounded
    carol, dave, erin = (issuer.token(name, BOTH) for name in ("carol", "dave", "erin"))
    first, second = initialize(server.url, carol), initialize(server.url, carol)
    assert first.status_code == second.status_code == 200
    # At her cap, carol's least recently used session is ended for the new one (tests/test_lockout.py).
    third = initialize(server.url, carol)
    assert third.status_code == 200, third.text
    assert in_session(server.url, carol, first.headers["mcp-session-id"]).status_code == 404
    assert initialize(server.url, dave).status_code == 200
    overall = initialize(server.url, erin)  # 3 open sessions: the SDK's MCP_MAX_SESSIONS
    assert overall.status_code == 503, overall.text
    time.sleep(4)  # idle timeout
    assert in_session(server.url, carol, second.headers["mcp-session-id"]).status_code == 404
    assert initialize(server.url, carol).status_code == 200
    events = all_events(server, server.env["MCP_ADMIN_API_KEYS"], event="rate_limit_exceeded")
    reasons = sorted(e["details"].get("reason") for e in events)
    assert reasons == ["sessions overall"], reasons
    assert len(all_events(server, server.env["MCP_ADMIN_API_KEYS"], event="session_ended")) == 1


def test_streams_are_capped_per_session_and_close_when_idle(bounded: tuple[Server, Issuer]) -> None:
    server, issuer = bounded
    token = issuer.token("frank", BOTH)
    session = initialize(server.url, token).headers["mcp-session-id"]
    headers = {
        **SSE_HEADERS,
        "Authorization": f"Bearer {token}",
        "Mcp-Session-Id": session,
        "Mcp-Protocol-Version": "2025-11-25",
    }
    started = time.monotonic()
    with httpx2.stream("GET", server.url, headers=headers, timeout=10) as stream:
        assert stream.status_code == 200
        busy = in_session(server.url, token, session)  # a second stream while the GET one is open
        assert busy.status_code == 429 and "MCP_SESSION_MAX_STREAMS" in busy.text
        for _ in stream.iter_raw():
            pass  # ends when the server closes the idle stream
    assert time.monotonic() - started < 5
    assert in_session(server.url, token, session).status_code == 200  # the session itself lives on


async def test_sessions_off_means_stateless_and_consent_refused_clearly(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    with serving_with_issuer(venv, project, tmp_path, MCP_SESSIONS="false") as (server, issuer):
        token = issuer.token("gina", BOTH)
        opened = await anyio.to_thread.run_sync(lambda: initialize(server.url, token))
        assert opened.status_code == 200 and "mcp-session-id" not in opened.headers
        note = await add_note(server.url, token, "stateless", mode="legacy")
        user = User("accept")
        async with mcp_over_http(server.url, token, mode="legacy", elicitation_callback=user) as client:
            refused = await client.call_tool("delete_note", {"note_id": note})
        assert refused.is_error and "cannot ask" in text_of(refused)
        assert user.asked == []


def test_the_servers_own_origin_is_not_cross_origin(replicas: Replicas) -> None:
    server = replicas.servers[0]
    token = replicas.issuer.token("alice", BOTH)
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {}}
    headers = {**SSE_HEADERS, "Authorization": f"Bearer {token}", "Mcp-Protocol-Version": "2025-11-25"}

    def post(origin: str, host: str | None = None) -> httpx2.Response:
        extra = {"Origin": origin, **({"Host": host} if host else {})}
        return httpx2.post(server.url, json=body, headers={**headers, **extra}, timeout=30)

    assert post(server.base).status_code == 200  # no MCP_TRUSTED_ORIGINS needed
    assert post(server.base.replace("http://", "https://")).status_code == 403  # another scheme
    assert post("http://evil.example").status_code == 403
    rebinding = post(f"http://evil.example:{server.port}", host=f"evil.example:{server.port}")
    assert rebinding.status_code == 421  # its own origin, but a Host this server does not answer to


# ---- the MCP Inspector CLI: a client without elicitation ------------------------------------------


@pytest.mark.parametrize(("transport", "era"), [("http", "legacy"), ("http", "modern"), ("stdio", "legacy")])
def test_inspector_cli_cannot_confirm_so_nothing_is_deleted(
    replicas: Replicas, project: Path, venv: Venv, tmp_path: Path, transport: str, era: str
) -> None:
    """The Inspector CLI (2.12.0) never declares elicitation: it cannot ask a person. Each era is refused
    with the reason, over HTTP (legacy on one replica, as sticky routing would; modern through the
    round-robin balancer) and over stdio, and the note survives."""
    if transport == "http":
        url = replicas.servers[0].url if era == "legacy" else replicas.url
        target = [url, "--header", f"Authorization: Bearer {replicas.issuer.token('ivan', BOTH)}"]
    else:
        command, _ = package_of(project)
        target = ["-e", f"MCP_DATA_DIR={tmp_path}", "--", venv.bin(command), "serve", "--transport", "stdio"]

    def call(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = run_node_tool(
            "inspector",
            "--cli",
            "--protocol-era",
            era,
            "--method",
            "tools/call",
            "--tool-name",
            tool,
            "--tool-args-json",
            json.dumps(arguments),
            *target,
            cwd=project,
            timeout=120,
            env={"HOME": str(tmp_path)},
        )
        answer: dict[str, Any] = json.loads(result.stdout)
        # The CLI exits 5 for a tool's error result, 0 for a result.
        assert result.returncode == (5 if answer["isError"] else 0), result.stdout + result.stderr
        return answer

    added = call("add_note", {"text": f"inspector {era}"})["content"][0]["text"]
    note = int(added.split("#")[1].rstrip("."))
    refused = call("delete_note", {"note_id": note})
    assert refused["isError"] is True
    assert "cannot ask" in refused["content"][0]["text"] and "elicitation" in refused["content"][0]["text"]
    assert f"inspector {era}" in call("list_notes", {})["content"][0]["text"]
