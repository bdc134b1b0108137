"""Consent for destructive tools (MCP elicitation) for every client era and deployment, and its security.

- 2026-07-28 clients through a plain round-robin balancer over two real replicas: the consent retry
  lands on the other replica, which unseals the requestState with the shared MCP_REQUEST_STATE_KEYS;
  a tampered, expired, another principal's or foreign state is refused and audited.
- initialize-era clients over HTTP: served with a session, so the question rides the call's stream;
  the session belongs to its principal, is bounded, and can be turned off.
Stdio consent is proved in test_tools_notes.py.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.server.request_state import AESGCMRequestStateCodec
from mcp.shared.exceptions import MCPError
from mcp.types import ElicitRequestParams, ElicitResult

from support import BASE, Server, Venv, free_port, read_env_file, render, running_server, text_of
from support.proxy import running_proxy
from support.redis import running_redis
from support.tooling import Issuer, all_events, mcp_over_http

pytestmark = pytest.mark.anyio

BOTH = "notes:read notes:write"
TTL = 4.0


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = {**BASE, "project_name": "Acme Consent", "transport": "both", "auth": "oauth",
               "sample_tools": ["notes"]}
    rendered = render(answers, tmp_path_factory.mktemp("consent") / "project")
    venv.install(rendered)
    return rendered


class User:
    """An elicitation callback that answers like a person would, and remembers what it was asked."""

    def __init__(self, action: str, confirm: bool = True) -> None:
        self.action, self.confirm, self.asked = action, confirm, []

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params.message)
        content = {"confirm": self.confirm} if self.action == "accept" else None
        return ElicitResult(action=self.action, content=content)  # type: ignore[arg-type]


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
        env = {**read_env_file(project), **issuer.settings(), "MCP_DATA_DIR": str(base),
               "MCP_RATE_LIMIT": "100000/minute", "MCP_RATE_LIMIT_STORAGE": redis.url,
               "MCP_SECURITY_EVENTS_URL": redis.url, "MCP_REQUEST_STATE_KEYS": keys,
               "MCP_REQUEST_STATE_TTL_SECONDS": str(TTL)}
        with (running_server(venv, project, env, log_dir=base) as one,
              running_server(venv, project, env, log_dir=base) as two,
              running_proxy(proxy_port, [one.base, two.base], {}, base / "proxy.log")):
            yield Replicas([one, two], url, issuer, keys)


async def add_note(url: str, token: str, text: str, **kwargs: Any) -> int:
    async with mcp_over_http(url, token, **kwargs) as client:
        added = text_of(await client.call_tool("add_note", {"text": text}))
    return int(added.split("#")[1].rstrip("."))


async def test_modern_client_consents_through_a_round_robin_balancer(replicas: Replicas) -> None:
    token = replicas.issuer.token("dana", BOTH)
    note = await add_note(replicas.url, token, "round robin")
    async with mcp_over_http(replicas.url, token) as client:
        refused = await client.call_tool("delete_note", {"note_id": note})
    assert refused.is_error and "cannot ask" in text_of(refused)
    for user in (User("decline"), User("cancel"), User("accept", confirm=False)):
        async with mcp_over_http(replicas.url, token, elicitation_callback=user) as client:
            refused = await client.call_tool("delete_note", {"note_id": note})
            assert refused.is_error and "did not confirm" in text_of(refused), text_of(refused)
            assert "round robin" in text_of(await client.call_tool("list_notes", {}))
        assert user.asked == [f"Delete note #{note}? This cannot be undone."]
    user = User("accept")
    async with mcp_over_http(replicas.url, token, elicitation_callback=user) as client:
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
        "delete_note", {"note_id": note}, input_responses=answers, request_state=state, allow_input_required=True
    )


async def test_bad_request_states_are_refused_and_audited(replicas: Replicas) -> None:
    alice, bob = replicas.issuer.token("alice", BOTH), replicas.issuer.token("bob", BOTH)
    note = await add_note(replicas.url, alice, "keep me")
    before = {e["id"] for e in await anyio.to_thread.run_sync(lambda: replicas.events(event="input_validation_failed"))}
    foreign = AESGCMRequestStateCodec([os.urandom(32)]).seal(b'{"v":1}')
    async with mcp_over_http(replicas.url, alice, elicitation_callback=User("accept")) as client:
        state = await _first_round(client, note)
        tampered = state[:-6] + ("AAAAAA" if not state.endswith("AAAAAA") else "BBBBBB")
        attempts = {"tampered": tampered, "foreign": foreign}
        for name, bad in attempts.items():
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
    refused = [e for e in events if e["id"] not in before and e["details"].get("reason") == "invalid_request_state"]
    who = sorted(e["identifier"] for e in refused)
    assert who == ["alice", "alice", "alice", "bob"], who
    assert all(e["severity"] == "high" and e["tool"] == "delete_note" for e in refused)


async def test_a_fresh_state_from_the_same_principal_still_works_after_the_refusals(replicas: Replicas) -> None:
    """The refusals above are not a side effect of a broken consent path."""
    alice = replicas.issuer.token("alice", BOTH)
    note = await add_note(replicas.url, alice, "delete me")
    async with mcp_over_http(replicas.url, alice, elicitation_callback=User("accept")) as client:
        state = await _first_round(client, note)
        done = await _retry(client, note, state)
    assert not done.is_error, text_of(done)
