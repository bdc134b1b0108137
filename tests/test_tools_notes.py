"""Notes through the real client: separate read and write scopes (OAuth tokens over HTTP), notes kept
per caller, and delete only after the user confirms through MCP elicitation (stdio and HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from support import (
    BASE,
    Server,
    Venv,
    free_port,
    http_client,
    jsonrpc,
    post_mcp,
    read_env_file,
    running_server,
    stdio_params,
    text_of,
)
from support.projects import installed_project, serving_with_issuer
from support.tooling import Issuer, User, all_events, mcp_over_http

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def notes_project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = {
        **BASE,
        "project_name": "Acme Notes",
        "transport": "both",
        "auth": "oauth",
        "sample_tools": ["notes"],
    }
    return installed_project(venv, tmp_path_factory.mktemp("notes"), answers)


@pytest.fixture(scope="module")
def notes_http(
    notes_project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Issuer]]:
    with serving_with_issuer(venv, notes_project, tmp_path_factory.mktemp("notes-http")) as served:
        yield served


async def test_stdio_delete_asks_the_user_and_obeys_the_answer(
    notes_project: Path, venv: Venv, tmp_path: Path
) -> None:
    env = {"MCP_DATA_DIR": str(tmp_path)}
    params = stdio_params(venv, notes_project, env)
    async with Client(params) as client:
        added = await client.call_tool("add_note", {"text": "call the plumber"})
        assert not added.is_error and "#1" in text_of(added)
        no_way_to_ask = await client.call_tool("delete_note", {"note_id": 1})
    assert no_way_to_ask.is_error and "cannot ask" in text_of(no_way_to_ask)
    for user in (User("decline"), User("cancel"), User("accept", confirm=False)):
        async with Client(params, elicitation_callback=user) as client:
            refused = await client.call_tool("delete_note", {"note_id": 1})
            assert refused.is_error and "did not confirm" in text_of(refused)
            assert "call the plumber" in text_of(await client.call_tool("list_notes", {}))
        assert user.asked == ["Delete note #1? This cannot be undone."]
    user = User("accept")
    async with Client(params, elicitation_callback=user) as client:
        deleted = await client.call_tool("delete_note", {"note_id": 1})
        assert not deleted.is_error, text_of(deleted)
        assert "(no notes)" in text_of(await client.call_tool("list_notes", {}))
    assert user.asked == ["Delete note #1? This cannot be undone."]


async def test_read_and_write_are_separate_scopes(notes_http: tuple[Server, Issuer]) -> None:
    server, issuer = notes_http
    admin = server.env["MCP_ADMIN_API_KEYS"]
    before = len(
        await anyio.to_thread.run_sync(lambda: all_events(server, admin, event="authorization_denied"))
    )

    # Over HTTP a missing tool scope is 403 insufficient_scope before the tool runs (clients step up).
    def refused(token: str, tool: str, arguments: dict[str, Any], scope: str) -> None:
        response = post_mcp(server, jsonrpc("tools/call", {"name": tool, "arguments": arguments}), token)
        assert response.status_code == 403, response.text
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert scope in response.json()["message"]

    reader, writer = issuer.token("reader", "notes:read"), issuer.token("writer", "notes:write")
    async with http_client(server.url, reader) as client:
        assert not (await client.call_tool("list_notes", {})).is_error
    for tool, arguments in (("add_note", {"text": "x"}), ("delete_note", {"note_id": 1})):
        await anyio.to_thread.run_sync(refused, reader, tool, arguments, "notes:write")
    async with http_client(server.url, writer) as client:
        assert not (await client.call_tool("add_note", {"text": "write-only"})).is_error
    await anyio.to_thread.run_sync(refused, writer, "list_notes", {}, "notes:read")
    denied = await anyio.to_thread.run_sync(lambda: all_events(server, admin, event="authorization_denied"))
    assert len(denied) - before == 3
    who = [e["identifier"] for e in denied]
    assert who.count("user:reader") == 2 and who.count("user:writer") == 1


async def test_callers_see_and_delete_only_their_own_notes(notes_http: tuple[Server, Issuer]) -> None:
    server, issuer = notes_http
    both = "notes:read notes:write"
    async with http_client(server.url, issuer.token("alice", both)) as alice:
        added = text_of(await alice.call_tool("add_note", {"text": "alice's secret plan"}))
    note_id = int(added.split("#")[1].rstrip("."))
    user = User("accept")
    async with mcp_over_http(server.url, issuer.token("bob", both), elicitation_callback=user) as bob:
        assert "alice" not in text_of(await bob.call_tool("list_notes", {}))
        refused = await bob.call_tool("delete_note", {"note_id": note_id})
        assert refused.is_error and f"You have no note #{note_id}" in text_of(refused)
    async with http_client(server.url, issuer.token("alice", both)) as alice:
        assert "alice's secret plan" in text_of(await alice.call_tool("list_notes", {}))


async def test_http_delete_confirms_through_elicitation(notes_http: tuple[Server, Issuer]) -> None:
    server, issuer = notes_http
    token = issuer.token("carol", "notes:read notes:write")
    async with http_client(server.url, token) as carol:
        note_id = int(text_of(await carol.call_tool("add_note", {"text": "temp"})).split("#")[1].rstrip("."))
        refused = await carol.call_tool("delete_note", {"note_id": note_id})
        assert refused.is_error and "cannot ask" in text_of(refused)
    user = User("accept")
    async with mcp_over_http(server.url, token, elicitation_callback=user) as carol:
        deleted = await carol.call_tool("delete_note", {"note_id": note_id})
        assert not deleted.is_error, text_of(deleted)
        assert "(no notes)" in text_of(await carol.call_tool("list_notes", {}))
    assert user.asked == [f"Delete note #{note_id}? This cannot be undone."]
    events = await anyio.to_thread.run_sync(lambda: all_events(server, server.env["MCP_ADMIN_API_KEYS"]))
    # The guard's one event per call; anomaly_detected (the first destructive use) observes them, not a call.
    carol_deletes = [
        e
        for e in events
        if e["identifier"] == "user:carol" and e["tool"] == "delete_note" and e["event"] != "anomaly_detected"
    ]
    outcomes = sorted(e["details"]["outcome"] for e in carol_deletes)
    assert outcomes == ["authorization_denied", "input_required", "ok"], outcomes


# 0.1's notes table, with rows as 0.1 wrote them: an OAuth caller's notes under its bare `sub`.
NOTES_0_1 = """
CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, text TEXT NOT NULL,
                    created TEXT NOT NULL);
CREATE INDEX notes_owner ON notes (owner, id);
INSERT INTO notes (owner, text, created) VALUES ('carol', 'carol''s plan', '2026-01-01T00:00:00+00:00');
INSERT INTO notes (owner, text, created)
    VALUES ('local-stdio', 'typed at the terminal', '2026-01-01T00:00:00+00:00');
"""


async def test_notes_written_before_namespaced_principals_follow_their_owner(
    notes_project: Path, venv: Venv, tmp_path: Path
) -> None:
    """After `copier update` from 0.1 the first notes call renames bare owners to `user:<sub>`, once,
    audited."""
    import sqlite3

    connection = sqlite3.connect(tmp_path / "notes.db")
    connection.executescript(NOTES_0_1)
    connection.close()
    port = free_port()
    with Issuer(audience=f"http://127.0.0.1:{port}/mcp") as issuer:
        env = {
            **read_env_file(notes_project),
            **issuer.settings(),
            "MCP_DATA_DIR": str(tmp_path),
            "MCP_RATE_LIMIT": "100000/minute",
        }
        with running_server(venv, notes_project, env, port=port, log_dir=tmp_path) as server:
            async with http_client(server.url, issuer.token("carol", "notes:read")) as carol:
                mine = text_of(await carol.call_tool("list_notes", {}))
                again = text_of(await carol.call_tool("list_notes", {}))
            async with http_client(server.url, issuer.token("dave", "notes:read")) as dave:
                other = text_of(await dave.call_tool("list_notes", {}))
            migrated = all_events(server, server.env["MCP_ADMIN_API_KEYS"], event="notes_owners_migrated")
    assert "carol's plan" in mine and mine == again, mine
    assert "(no notes)" in other and "typed at the terminal" not in mine
    assert len(migrated) == 1, migrated
    assert migrated[0]["details"]["owners"] == 1 and migrated[0]["details"]["notes"] == 1
    owners = sqlite3.connect(tmp_path / "notes.db").execute("SELECT owner FROM notes ORDER BY id").fetchall()
    assert owners == [("user:carol",), ("local-stdio",)]
