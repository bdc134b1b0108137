"""A tool's progress and log lines (the guard's Notify) reach the client, sanitised and bounded, on every
transport that can carry them; a session's replay buffer answers only that session.

Written the way a user would test their own tool: a module in tools/ (support.tooling.add_tool_module),
a real server, the SDK's client in both eras.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import LoggingMessageNotificationParams

from support import (
    BASE,
    MCP_HEADERS,
    Server,
    Venv,
    client_key,
    jsonrpc,
    post_mcp,
    read_env_file,
    running_server,
    stdio_params,
    text_of,
)
from support.projects import installed_project
from support.tooling import all_events, mcp_over_http

pytestmark = pytest.mark.anyio
SECOND = "second-principal-" + secrets.token_hex(16)
REPLAY_BYTES = 4_096  # a session's replay buffer, small enough to overflow in a test

REPORTER = '''
from typing import Annotated

from mcp.server.mcpserver import Resolve, Sample
from mcp.types import CreateMessageResult, SamplingMessage, TextContent
from pydantic import Field

from ..security.guard import Guard, Notify
from ..settings import Settings


async def ask() -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text="Hi"))], max_tokens=8)


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True)
    async def chatty(notify: Notify, secret: Annotated[str, Field(max_length=100)],
                     count: Annotated[int, Field(ge=0, le=300)] = 3) -> str:
        """Log and report progress `count` times."""
        await notify.warning(f"key {secret} \\x1b[31mred\\u202e " + "x" * 5000)
        await notify.info("an info line")
        for step in range(count):
            await notify.progress(step, count, f"step {step} token={secret}")
        return "done"

    @guard.resource("notes://board")
    async def board() -> str:
        """The board."""
        return "the board"

    @guard.tool(read_only=False)
    async def edit_board() -> str:
        """Change the board and tell its subscribers."""
        told = await guard.resource_updated("notes://board")
        return f"told {told}"

    @guard.tool(read_only=True)
    async def big(size: Annotated[int, Field(ge=1, le=20_000)], notify: Notify) -> str:
        """A long answer, after a log line (so it is streamed: a bare answer comes as JSON)."""
        await notify.info("sending")
        return "b" * size

    @guard.tool(read_only=True)
    async def needs_sampling(answer: Annotated[CreateMessageResult, Resolve(ask)]) -> str:
        """Needs a client that can sample."""
        return "sampled"
'''


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = {
        **BASE,
        "project_name": "Acme Notify",
        "transport": "both",
        "auth": "api_key",
        "sample_tools": [],
    }
    return installed_project(venv, tmp_path_factory.mktemp("notify"), answers, {"reporter": REPORTER})


@pytest.fixture(scope="module")
def served(project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("notify-logs")
    env = read_env_file(project)
    # A second principal, for the replay test.
    env.update(
        MCP_API_KEYS=f"{env['MCP_API_KEYS']},{SECOND}",
        MCP_RATE_LIMIT="100000/minute",
        MCP_SESSION_REPLAY_BYTES=str(REPLAY_BYTES),
    )
    with running_server(venv, project, env, log_dir=logs) as server:
        yield server


def key(server: Server) -> str:
    return client_key(server.env)


async def chat(
    server: Server, mode: str, count: int = 3, level: Any = None, set_level: Any = None
) -> tuple[str, list[LoggingMessageNotificationParams], list[tuple[float, Any, Any]]]:
    lines: list[LoggingMessageNotificationParams] = []
    progress: list[tuple[float, Any, Any]] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        lines.append(params)

    async def on_progress(done: float, total: Any, message: Any) -> None:
        progress.append((done, total, message))

    async with mcp_over_http(
        server.url, key(server), mode=mode, logging_callback=on_log, log_level=level
    ) as client:
        if set_level:
            await client.set_logging_level(set_level)
        result = await client.call_tool(
            "chatty", {"secret": key(server), "count": count}, progress_callback=on_progress
        )
    return text_of(result), lines, progress


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_log_lines_and_progress_arrive_sanitised(served: Server, mode: str) -> None:
    # legacy: an initialize-era session (the call's SSE answer); auto: a 2026-07-28 request that asked.
    text, lines, progress = await chat(served, mode, level="debug" if mode == "auto" else None)
    assert text == "done"
    assert [line.level for line in lines] == ["warning", "info"], lines
    warning = str(lines[0].data)
    assert key(served) not in warning and "\x1b" not in warning and "\u202e" not in warning
    assert len(warning) < 1_200 and "truncated" in warning, warning  # capped at MAX_NOTIFICATION_CHARS
    assert [p[0] for p in progress] == [0, 1, 2] and {p[1] for p in progress} == {3}
    assert all(key(served) not in str(p[2]) for p in progress), progress


async def test_set_level_filters_a_sessions_log_lines(served: Server) -> None:
    _, lines, _ = await chat(served, "legacy", set_level="warning")
    assert [line.level for line in lines] == ["warning"]


async def test_a_2026_request_that_did_not_ask_gets_no_log_lines(served: Server) -> None:
    text, lines, progress = await chat(served, "auto")
    assert text == "done" and lines == [] and len(progress) == 3


async def test_a_call_sends_at_most_a_hundred_and_the_audit_counts_the_rest(served: Server) -> None:
    _, lines, progress = await chat(served, "legacy", count=250)
    assert len(lines) + len(progress) == 100
    events = [
        e
        for e in all_events(served, served.env["MCP_ADMIN_API_KEYS"], event="tool_called")
        if e["tool"] == "chatty" and e["details"].get("notifications_dropped")
    ]
    assert events and events[-1]["details"]["notifications"] == 100
    assert events[-1]["details"]["notifications_dropped"] == 152  # 2 log lines + 250 progress - 100


async def test_a_missing_client_capability_is_refused_as_such_not_as_a_crash(served: Server) -> None:
    async with mcp_over_http(served.url, key(served)) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("needs_sampling", {})
    assert refused.value.error.code == -32021
    assert "sampling" in refused.value.error.message and "reporter" not in refused.value.error.message
    assert "failed outside the tool" not in served.log()
    events = all_events(served, served.env["MCP_ADMIN_API_KEYS"], event="input_validation_failed")
    assert any(e["tool"] == "needs_sampling" for e in events), events


def open_session(http: httpx2.Client, server: Server, token: str) -> str:
    headers = {
        **MCP_HEADERS,
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
    }
    answer = http.post(
        server.url,
        headers=headers,
        json=jsonrpc(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        ),
    )
    session = answer.headers["mcp-session-id"]
    http.post(
        server.url,
        headers={**headers, "Mcp-Session-Id": session},
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
    )
    return session


def replay(http: httpx2.Client, server: Server, headers: dict[str, str], last_event_id: str) -> str:
    """What a GET with Last-Event-ID brings back (the stream ends once the replay is done)."""
    seen = ""
    try:
        with http.stream(
            "GET",
            server.url,
            headers={**headers, "Last-Event-ID": last_event_id, "Accept": "text/event-stream"},
        ) as stream:
            for chunk in stream.iter_text():
                seen += chunk
                if '"id":7' in seen:
                    break
    except httpx2.ReadTimeout:
        pass  # nothing more to replay
    return seen


def test_replay_is_bound_to_the_session(served: Server) -> None:
    """A replays its own answer by Last-Event-ID; B, in its own session, gets nothing of A's."""
    session_headers: dict[str, str] = {}
    with httpx2.Client(timeout=httpx2.Timeout(10, read=3)) as http:
        mine = {
            **MCP_HEADERS,
            **session_headers,
            "Authorization": f"Bearer {key(served)}",
            "Mcp-Session-Id": open_session(http, served, key(served)),
        }
        answer = http.post(
            served.url,
            headers=mine,
            json=jsonrpc(
                "tools/call", {"name": "chatty", "arguments": {"secret": "marker-of-a", "count": 0}}, id=7
            ),
        )
        ids = [line[3:].strip() for line in answer.text.splitlines() if line.startswith("id:")]
        assert len(ids) >= 2 and "done" in answer.text, answer.text  # a priming event, then the answer
        assert '"text":"done"' in replay(http, served, mine, ids[0]).replace(" ", "")
        theirs = {
            **MCP_HEADERS,
            **session_headers,
            "Authorization": f"Bearer {SECOND}",
            "Mcp-Session-Id": open_session(http, served, SECOND),
        }
        seen = replay(http, served, theirs, ids[0])
    assert "marker-of-a" not in seen and "done" not in seen, seen


async def test_a_session_subscribes_to_a_guarded_resource_and_hears_of_its_change(served: Server) -> None:
    heard: list[str] = []
    told = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            heard.append(str(message.params.uri))
            told.set()

    async with mcp_over_http(served.url, key(served), mode="legacy", message_handler=on_message) as client:
        await client.subscribe_resource("notes://board")
        with pytest.raises(MCPError) as unknown:
            await client.subscribe_resource("notes://nowhere")
        assert text_of(await client.call_tool("edit_board", {})) == "told 1"
        with anyio.fail_after(5):
            await told.wait()
        await client.unsubscribe_resource("notes://board")
        assert text_of(await client.call_tool("edit_board", {})) == "told 0"
    assert heard == ["notes://board"]
    assert unknown.value.error.code == -32602 and "Unknown resource" in unknown.value.error.message


async def test_subscribing_without_a_session_is_refused_with_the_fix(served: Server) -> None:
    # An initialize-era client that reads only JSON gets no session: there is nothing to notify.
    answer = post_mcp(
        served,
        jsonrpc("resources/subscribe", {"uri": "notes://board"}),
        key(served),
        headers={"Accept": "application/json"},
    )
    error = answer.json()["error"]
    assert error["code"] == -32600 and "MCP_SESSIONS" in error["message"], error


async def test_stdio_clients_get_the_same_sanitised_lines(project: Path, venv: Venv) -> None:
    env = read_env_file(project)
    lines: list[LoggingMessageNotificationParams] = []
    progress: list[float] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        lines.append(params)

    async def on_progress(done: float, total: Any, message: Any) -> None:
        progress.append(done)

    async with Client(stdio_params(venv, project, env), logging_callback=on_log, mode="legacy") as client:
        result = await client.call_tool(
            "chatty", {"secret": client_key(env), "count": 2}, progress_callback=on_progress
        )
    assert text_of(result) == "done" and progress == [0, 1]
    assert [line.level for line in lines] == ["warning", "info"]
    assert client_key(env) not in str(lines[0].data) and "\x1b" not in str(lines[0].data)


def test_the_replay_buffer_keeps_only_the_newest_bytes(served: Server) -> None:
    """An answer larger than MCP_SESSION_REPLAY_BYTES is not kept, and it pushed nothing else out.

    Only streamed answers are kept for replay (a bare answer is sent as JSON, complete or not at all).
    """
    with httpx2.Client(timeout=httpx2.Timeout(10, read=3)) as http:
        headers = {
            **MCP_HEADERS,
            "Authorization": f"Bearer {key(served)}",
            "Mcp-Session-Id": open_session(http, served, key(served)),
        }
        small = http.post(
            served.url,
            headers=headers,
            json=jsonrpc("tools/call", {"name": "big", "arguments": {"size": 100}}, id=7),
        )
        small_ids = [line[3:].strip() for line in small.text.splitlines() if line.startswith("id:")]
        large = http.post(
            served.url,
            headers=headers,
            json=jsonrpc("tools/call", {"name": "big", "arguments": {"size": REPLAY_BYTES * 2}}, id=7),
        )
        large_ids = [line[3:].strip() for line in large.text.splitlines() if line.startswith("id:")]
        assert "b" * 100 in replay(http, served, headers, small_ids[0])
        assert "bbbb" not in replay(http, served, headers, large_ids[0])


def test_the_replay_buffer_bounds_its_entries_too(project: Path, venv: Venv) -> None:
    """Events without content (priming events, answers too large to keep) still count: no endless list."""
    script = (
        "import asyncio\n"
        "from acme_notify.transport.http.session_manager import ENTRY_BYTES, SessionReplay\n"
        "async def main():\n"
        "    store = SessionReplay(4096)\n"
        "    for _ in range(10_000):\n"
        "        await store.store_event('1', None)\n"
        "    print(len(store._events), 4096 // ENTRY_BYTES)\n"
        "asyncio.run(main())\n"
    )
    done = venv.run(venv.python, "-c", script, cwd=project)
    kept, bound = map(int, done.stdout.split())
    assert 0 < kept <= bound, done.stderr


def test_a_full_replay_buffer_stays_within_its_setting_in_memory(project: Path, venv: Venv) -> None:
    """Kept as JSON bytes, not message objects: small messages as objects took 6 times the setting."""
    script = (
        "import asyncio, gc, tracemalloc\n"
        "from mcp_types import JSONRPCResponse\n"
        "from acme_notify.transport.http.session_manager import SessionReplay\n"
        "async def main():\n"
        "    for size in (50, 400, 4000):\n"
        "        gc.collect()\n"
        "        tracemalloc.start()\n"
        "        store = SessionReplay(262_144)\n"
        "        for number in range(5_000):\n"
        "            result = {'content': [{'type': 'text', 'text': 'x' * size}], 'isError': False}\n"
        "            await store.store_event('1', JSONRPCResponse(jsonrpc='2.0', id=number, result=result))\n"
        "        gc.collect()\n"
        "        print(tracemalloc.get_traced_memory()[0])\n"
        "        tracemalloc.stop()\n"
        "        del store\n"
        "asyncio.run(main())\n"
    )
    done = venv.run(venv.python, "-c", script, cwd=project)
    assert done.returncode == 0, done.stderr
    for held in map(int, done.stdout.split()):
        assert held <= 1.5 * 262_144, f"a full 256 KiB buffer holds {held:,} bytes"
