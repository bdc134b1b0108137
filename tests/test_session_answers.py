"""Answers in an initialize-era session (session_manager.py): JSON when a request has nothing to say
before its response, the SDK's SSE stream when it asks, notifies, or takes longer than a moment."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from support import MCP_HEADERS, Server, Venv, client_key, jsonrpc, post_mcp, read_env_file, running_server

INITIALIZE = jsonrpc(
    "initialize",
    {
        "protocolVersion": "2025-11-25",
        "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "raw", "version": "1"},
    },
)


@pytest.fixture(scope="module")
def server(rendered: Callable[[str], Path], venv: Venv) -> Iterator[Server]:
    project = rendered("http_all")
    with running_server(venv, project, read_env_file(project)) as running:  # replay on (the default)
        yield running


def open_session(server: Server) -> dict[str, str]:
    key = client_key(server.env)
    opened = post_mcp(server, INITIALIZE, key)
    assert opened.status_code == 200, opened.text
    headers = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
    assert (
        post_mcp(server, {"jsonrpc": "2.0", "method": "notifications/initialized"}, key, headers).status_code
        == 202
    )
    return headers


def events(raw: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[5:]) for line in raw.splitlines() if line.startswith("data:") and line[5:].strip()
    ]


def test_a_request_with_nothing_to_say_first_is_answered_as_json(server: Server) -> None:
    session = open_session(server)
    for number, body in enumerate(
        [jsonrpc("ping"), jsonrpc("tools/list"), jsonrpc("tools/call", {"name": "whoami", "arguments": {}})],
        start=2,
    ):
        response = post_mcp(server, {**body, "id": number}, client_key(server.env), session)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"  # the SDK alone: text/event-stream
        assert response.headers["mcp-session-id"] == session["Mcp-Session-Id"]
        assert response.headers["x-content-type-options"] == "nosniff"
        answer = response.json()
        assert answer["id"] == number and "result" in answer, answer


def test_a_question_streams_and_its_answer_comes_back(server: Server) -> None:
    """A destructive tool asks first: the call streams the question, the answer (a POST) reaches it."""
    key, session = client_key(server.env), open_session(server)
    added = post_mcp(
        server, jsonrpc("tools/call", {"name": "add_note", "arguments": {"text": "x"}}, id=2), key, session
    )
    note = int(added.json()["result"]["content"][0]["text"].split("#")[1].rstrip("."))
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {key}", **session}
    call = jsonrpc("tools/call", {"name": "delete_note", "arguments": {"note_id": note}}, id=3)
    with httpx2.stream("POST", server.url, json=call, headers=headers, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        question = next(event for line in lines for event in events(line))
        assert question["method"] == "elicitation/create", question
        declined = {"jsonrpc": "2.0", "id": question["id"], "result": {"action": "decline"}}
        assert post_mcp(server, declined, key, session).status_code == 202
        rest = events("\n".join(lines))
    assert rest[-1]["id"] == 3 and rest[-1]["result"]["isError"], rest
    assert "did not confirm" in rest[-1]["result"]["content"][0]["text"]


def test_a_call_that_takes_longer_starts_its_stream_before_it_answers(server: Server) -> None:
    key, session = client_key(server.env), open_session(server)
    code = "import time\ntime.sleep(3)\nprint('slept')"
    call = jsonrpc("tools/call", {"name": "run_python", "arguments": {"code": code}}, id=2)
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {key}", **session}
    started = time.monotonic()
    with httpx2.stream("POST", server.url, json=call, headers=headers, timeout=30) as response:
        headers_after = time.monotonic() - started
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    assert headers_after < 2.5, headers_after  # ANSWER_WAIT_SECONDS (1 s), not the call's 3 s
    answer = events(body)[-1]
    assert answer["id"] == 2 and "slept" in answer["result"]["content"][0]["text"], answer
