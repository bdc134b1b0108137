"""The refusal transcript: every way the guard refuses, on every surface and transport, pinned to a golden
file.

Issue 23 rewrites the guard's dispatch (`_call_tool`, `_checked_surface`, `_admit`, the `_deny*` helpers)
as one pipeline of steps. What must not change is what a refused caller and an auditor see. For each
refusal class (unknown item, no principal, missing scope, bad argument, unsafe template value, broken
schema rule, rate limit, in-flight cap, audit store down, timeout, request sent as a notification), on
each surface it applies to (tool, resource, resource template, prompt, completion, subscription), over
stdio and HTTP, this records the answer (an error result's text, or a JSON-RPC error's code and message,
or the HTTP status and body where the perimeter answers) and the security events written (name,
severity, item, reason, and whether the store took it). The record is compared with
tests/refusal_transcript.json exactly. It uses only what a client and an auditor can see: the real MCP
client, HTTP, the audit trail (`/security/events`) and the server's security log lines, so it passes
unchanged across the refactor.

After an intended change of behaviour, rewrite the golden file and review its diff:
    MCP_TEMPLATE_WRITE_TRANSCRIPT=1 uv run pytest tests/test_refusal_transcript.py
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import secrets
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, Notification, PromptReference, ResourceTemplateReference

from support import (
    ANSWER_SETS,
    MCP_HEADERS,
    Server,
    Venv,
    eventually,
    free_port,
    http_client,
    jsonrpc,
    post_mcp,
    read_env_file,
    running_server,
    stdio_params,
    text_of,
)
from support.redis import RedisServer, running_redis
from support.tooling import all_events
from support.tools import project_with_tools

pytestmark = pytest.mark.anyio

GOLDEN = Path(__file__).with_name("refusal_transcript.json")
SCOPE = "probe.use"

# One item per surface and per refusal class that needs state of its own (a limit, a timeout), so that
# the cases do not spend each other's budgets. Every item needs SCOPE, for the missing-scope cases.
PROBES = f'''
"""Test-only items for the refusal transcript (tests/test_refusal_transcript.py)."""

from typing import Annotated

import anyio
from pydantic import Field

from ..security.guard import Guard
from ..settings import Settings

Word = Annotated[str, Field(max_length=8)]
SCOPES = ("{SCOPE}",)


def register(guard: Guard, settings: Settings) -> None:
    async def words(value: str) -> list[str]:
        return [word for word in ("alpha", "beta") if word.startswith(value)]

    async def never(value: str) -> list[str]:
        await anyio.sleep(30)
        return []

    @guard.tool(scopes=SCOPES, read_only=True)
    async def probe_tool(word: Word) -> str:
        """Echo a short word."""
        return word

    @guard.tool(scopes=SCOPES, read_only=True, schema_keywords={{
        "if": {{"properties": {{"mode": {{"const": "exact"}}}}, "required": ["mode"]}},
        "then": {{"required": ["term"]}},
    }})
    async def probe_rules(mode: Word, term: Word = "") -> str:
        """An exact search needs a term."""
        return f"{{mode}} {{term}}"

    @guard.tool(scopes=SCOPES, read_only=True, rate_limit="1/minute")
    async def probe_tool_limited() -> str:
        """Once a minute."""
        return "ok"

    @guard.tool(scopes=SCOPES, read_only=True, timeout=0.5)
    async def probe_tool_slow() -> str:
        """Longer than its timeout."""
        await anyio.sleep(30)
        return "finished"

    @guard.tool(scopes=SCOPES, read_only=True)
    async def probe_hold(tag: Word) -> str:
        """Stay in flight until the test writes the release file."""
        (settings.data_dir / f"held-{{tag}}").write_text("held")
        with anyio.fail_after(30):
            while not (settings.data_dir / "release").exists():
                await anyio.sleep(0.02)
        return "released"

    @guard.resource("probe://static", scopes=SCOPES)
    async def probe_static() -> str:
        """A fixed text."""
        return "static"

    @guard.resource("probe://limited", scopes=SCOPES, rate_limit="1/minute")
    async def probe_static_limited() -> str:
        """Once a minute."""
        return "limited"

    @guard.resource("probe://slow", scopes=SCOPES, timeout=0.5)
    async def probe_static_slow() -> str:
        """Longer than its timeout."""
        await anyio.sleep(30)
        return "finished"

    @guard.resource("item://{{slug}}", scopes=SCOPES, complete={{"slug": words}})
    async def probe_template(slug: Word) -> str:
        """One item."""
        return f"item {{slug}}"

    @guard.resource("limited://{{slug}}", scopes=SCOPES, rate_limit="1/minute")
    async def probe_template_limited(slug: Word) -> str:
        """Once a minute."""
        return f"limited {{slug}}"

    @guard.resource("slow://{{slug}}", scopes=SCOPES, timeout=0.5)
    async def probe_template_slow(slug: Word) -> str:
        """Longer than its timeout."""
        await anyio.sleep(30)
        return slug

    @guard.prompt(scopes=SCOPES, complete={{"topic": words}})
    async def probe_prompt(topic: Word) -> str:
        """Write about a topic."""
        return f"Write about {{topic}}."

    @guard.prompt(scopes=SCOPES, rate_limit="1/minute")
    async def probe_prompt_limited(topic: Word) -> str:
        """Once a minute."""
        return f"Write about {{topic}}."

    @guard.prompt(scopes=SCOPES, timeout=0.5, complete={{"topic": never}})
    async def probe_prompt_slow(topic: Word) -> str:
        """Longer than its timeout, and so is its completer."""
        await anyio.sleep(30)
        return topic
'''

MAX_IN_FLIGHT = 2
# Per principal and minute: a run stays below it until its last phase spends it. Over HTTP the admin
# key's reads of /security/events count too, hence more.
STDIO_LIMIT, HTTP_LIMIT = "150/minute", "500/minute"
SETTINGS = {
    "MCP_MAX_CALLS_IN_FLIGHT": str(MAX_IN_FLIGHT),
    "MCP_AUTH_FAILURE_THRESHOLD": "1000000",
    "MCP_SECURITY_EVENTS_PER_SOURCE": "1000000/minute",
    "MCP_ANOMALY_REFUSAL_THRESHOLD": "1000000",  # an anomaly is an observation about refusals, not one
}
PROMPT = PromptReference(type="ref/prompt", name="probe_prompt")
SLOW_PROMPT = PromptReference(type="ref/prompt", name="probe_prompt_slow")
TEMPLATE = ResourceTemplateReference(type="ref/resource", uri="item://{slug}")
LONG = "x" * 40


# ---- recording ------------------------------------------------------------------------------------


def normal(text: str) -> str:
    """Message text without what varies between runs (the seconds until a window resets)."""
    return re.sub(r"retry after \d+ seconds", "retry after N seconds", text)


def event_row(event: dict[str, Any], stored: bool) -> dict[str, Any]:
    row = {"event": event["event"], "severity": event["severity"], "item": event["tool"]}
    for detail in ("reason", "method"):  # why, and for a notification which request it was
        if detail in event["details"]:
            row[detail] = event["details"][detail]
    if not stored:
        row["stored"] = False
    return row


def security_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"logger":"security"')]


class StdioTrail:
    """The stdio server's events, from its security log lines on stderr (stdio has no events endpoint)."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, 0

    def read(self) -> list[dict[str, Any]]:
        lines = security_lines(self.path.read_text(errors="replace"))
        new, self.seen = lines[self.seen :], len(lines)
        return [event_row(line, line.get("stored", True)) for line in new]


class HttpTrail:
    """The HTTP server's events, from /security/events; those the store could not take from its log lines."""

    def __init__(self, server: Server, admin: str) -> None:
        self.server, self.admin, self.ids, self.unstored = server, admin, set[str](), 0

    def read(self) -> list[dict[str, Any]]:
        stored = [e for e in all_events(self.server, self.admin) if e["id"] not in self.ids]
        self.ids |= {e["id"] for e in stored}
        lines = [line for line in security_lines(self.server.log()) if line.get("stored") is False]
        unstored, self.unstored = lines[self.unstored :], len(lines)
        return [event_row(e, True) for e in stored] + [event_row(e, False) for e in unstored]


class Transcript:
    def __init__(self, trail: StdioTrail | HttpTrail) -> None:
        self.trail, self.rows = trail, list[dict[str, Any]]()

    async def drain(self, minimum: int = 0, *, within: float = 15) -> list[dict[str, Any]]:
        """The events written since the last drain. Waits up to `within` seconds for `minimum` of them
        (a notification has no answer to wait for), then takes what there is."""
        found: list[dict[str, Any]] = []
        with anyio.move_on_after(within):
            while True:
                found += await anyio.to_thread.run_sync(self.trail.read)
                if len(found) >= minimum:
                    return found
                await anyio.sleep(0.05)
        return found + await anyio.to_thread.run_sync(self.trail.read)

    async def record(
        self, surface: str, refusal: str, request: Awaitable[Any], events: int = 0, within: float = 15
    ) -> None:
        answer = await answer_of(request)
        found = await self.drain(events, within=within)
        self.rows.append(
            {
                "surface": surface,
                "refusal": refusal,
                "answer": answer,
                "events": sorted(found, key=lambda e: json.dumps(e, sort_keys=True)),
            }
        )

    async def setup(self, request: Awaitable[Any]) -> None:
        """A request that prepares a case (spends a budget); its answer and events are not recorded."""
        with contextlib.suppress(MCPError):
            await request
        await self.drain()

    def result(self) -> dict[str, dict[str, Any]]:
        """The transcript as the golden file holds it: by "surface / refusal class", sorted."""
        return {
            f"{row['surface']} / {row['refusal']}": {"answer": row["answer"], "events": row["events"]}
            for row in sorted(self.rows, key=lambda row: (row["surface"], row["refusal"]))
        }


async def answer_of(request: Awaitable[Any]) -> dict[str, Any]:
    try:
        result = await request
    except MCPError as exc:
        return {"error": exc.error.code, "message": normal(exc.error.message)}
    if isinstance(result, httpx2.Response):
        body = result.json()
        return {
            "status": result.status_code,
            "body": {k: normal(v) if isinstance(v, str) else v for k, v in body.items()},
        }
    if isinstance(result, CallToolResult):
        return {"is_error": bool(result.is_error), "text": normal(text_of(result))}
    if result is None:
        return {"answer": None}
    return {"answered": type(result).__name__}  # not refused: recorded as it is


async def nothing() -> None:
    """The answer to a notification: there is none."""


async def notify(client: Client, method: str, params: dict[str, Any]) -> None:
    # A request without an id, through the client's own notification path.
    await client.session.send_notification(Notification(method=method, params=params))  # type: ignore[arg-type]


async def subscribe(client: Client, uri: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resources/subscribe is handshake-era only; that is the point
        return await client.subscribe_resource(uri)


# ---- the cases ------------------------------------------------------------------------------------


async def common_cases(t: Transcript, client: Client, legacy: Client, data: Path) -> None:
    """The classes that apply alike over stdio and HTTP, as the main principal (which holds SCOPE).
    `legacy` speaks the handshake era (resources/subscribe exists there only); over stdio it is `client`."""
    # unknown item (a resource template has no unknown case of its own: a URI no template matches is an
    # unknown resource)
    await t.record("tool", "unknown item", client.call_tool("no_such_tool", {}))
    await t.record("resource", "unknown item", client.read_resource("probe://nothing"))
    await t.record("prompt", "unknown item", client.get_prompt("no_such_prompt", {}))
    await t.record(
        "completion",
        "unknown item",
        client.complete(
            PromptReference(type="ref/prompt", name="no_such_prompt"), {"name": "topic", "value": ""}
        ),
    )
    await t.record("subscription", "unknown item", subscribe(legacy, "probe://nothing"))

    # bad argument (a static resource has none to get wrong)
    await t.record("tool", "bad argument", client.call_tool("probe_tool", {"word": LONG}))
    await t.record("resource_template", "bad argument", client.read_resource(f"item://{LONG}"))
    await t.record("prompt", "bad argument", client.get_prompt("probe_prompt", {"topic": LONG}))
    await t.record("completion", "bad argument", client.complete(PROMPT, {"name": "topic", "value": LONG}))
    await t.record("completion", "unknown argument", client.complete(TEMPLATE, {"name": "nope", "value": ""}))
    # A subscription checks a template value's safety (below), not its bounds: today it is answered.
    await t.record("subscription", "bad argument", subscribe(legacy, f"item://{LONG}"))

    # unsafe template value: refused before anything is matched further, for a read and a subscription
    await t.record("resource_template", "unsafe template value", client.read_resource("item://..%2Fetc"))
    await t.record("subscription", "unsafe template value", subscribe(legacy, "item://..%2Fetc"))

    # broken schema rule: schema_keywords exists for tools only
    await t.record("tool", "broken schema rule", client.call_tool("probe_rules", {"mode": "exact"}))

    # per-item rate limit: the first request spends the one-a-minute budget
    for surface, first in (
        ("tool", lambda: client.call_tool("probe_tool_limited", {})),
        ("resource", lambda: client.read_resource("probe://limited")),
        ("resource_template", lambda: client.read_resource("limited://a")),
        ("prompt", lambda: client.get_prompt("probe_prompt_limited", {"topic": "a"})),
    ):
        await t.setup(first())
        await t.record(surface, "rate limit (per item)", first())

    # timeout
    await t.record("tool", "timeout", client.call_tool("probe_tool_slow", {}))
    await t.record("resource", "timeout", client.read_resource("probe://slow"))
    await t.record("resource_template", "timeout", client.read_resource("slow://a"))
    await t.record("prompt", "timeout", client.get_prompt("probe_prompt_slow", {"topic": "a"}))
    await t.record("completion", "timeout", client.complete(SLOW_PROMPT, {"name": "topic", "value": ""}))

    # in-flight cap: MAX_IN_FLIGHT calls held open, then one more on each surface that runs a function
    async with anyio.create_task_group() as holders:
        for n in range(MAX_IN_FLIGHT):
            holders.start_soon(client.call_tool, "probe_hold", {"tag": str(n)})
        with anyio.fail_after(15):
            await eventually(lambda: len(list(data.glob("held-*"))) >= MAX_IN_FLIGHT, interval=0.02)
        await t.record("tool", "in-flight cap", client.call_tool("probe_tool", {"word": "a"}))
        await t.record("resource", "in-flight cap", client.read_resource("probe://static"))
        await t.record("resource_template", "in-flight cap", client.read_resource("item://a"))
        await t.record("prompt", "in-flight cap", client.get_prompt("probe_prompt", {"topic": "a"}))
        (data / "release").write_text("go")
    await t.drain(MAX_IN_FLIGHT)  # the held calls' own events

    # request sent as a notification: not run, recorded as refused, no answer
    for surface, method, params in (
        ("tool", "tools/call", {"name": "probe_tool", "arguments": {"word": "a"}}),
        ("resource", "resources/read", {"uri": "probe://static"}),
        ("resource_template", "resources/read", {"uri": "item://a"}),
        ("prompt", "prompts/get", {"name": "probe_prompt", "arguments": {"topic": "a"}}),
        (
            "completion",
            "completion/complete",
            {
                "ref": {"type": "ref/prompt", "name": "probe_prompt"},
                "argument": {"name": "topic", "value": "a"},
            },
        ),
        ("subscription", "resources/subscribe", {"uri": "probe://static"}),
    ):
        await notify(legacy, method, params)
        await t.record(surface, "request sent as a notification", nothing(), events=1, within=3)
    if client is not legacy:
        # A 2026-07-28 stateless POST of a notification goes to the SDK's own app, not through the guard.
        # Nothing can be awaited for an event that may not come: a second is plenty for one that does.
        await notify(client, "tools/call", {"name": "probe_tool", "arguments": {"word": "a"}})
        await t.record("tool", "request sent as a notification (stateless)", nothing(), events=1, within=1)


async def audit_down_cases(t: Transcript, client: Client, redis_server: RedisServer) -> None:
    """The audit store refuses writes (a full Redis): nothing runs whose event could not be stored."""
    store = redis_server.client()
    await anyio.sleep(1.2)  # past the window in which the last good write vouches for the store
    store.config_set("maxmemory", "1")
    try:
        await anyio.sleep(1.2)
        await t.record("tool", "audit store down", client.call_tool("probe_tool", {"word": "a"}))
        await t.record("resource", "audit store down", client.read_resource("probe://static"))
        await t.record("resource_template", "audit store down", client.read_resource("item://a"))
        await t.record("prompt", "audit store down", client.get_prompt("probe_prompt", {"topic": "a"}))
    finally:
        store.config_set("maxmemory", "0")
    await anyio.sleep(1.2)  # past the window in which a failed store is not retried


def principal_limit_requests(
    client: Client, legacy: Client
) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    return [
        ("tool", lambda: client.call_tool("probe_tool", {"word": "a"})),
        ("resource", lambda: client.read_resource("probe://static")),
        ("resource_template", lambda: client.read_resource("item://a")),
        ("prompt", lambda: client.get_prompt("probe_prompt", {"topic": "a"})),
        ("completion", lambda: client.complete(PROMPT, {"name": "topic", "value": "a"})),
        ("subscription", lambda: subscribe(legacy, "probe://static")),
    ]


def raw_requests() -> list[tuple[str, dict[str, Any]]]:
    """The same six requests as JSON-RPC bodies, for the refusals the HTTP perimeter answers itself."""
    return [
        ("tool", jsonrpc("tools/call", {"name": "probe_tool", "arguments": {"word": "a"}})),
        ("resource", jsonrpc("resources/read", {"uri": "probe://static"})),
        ("resource_template", jsonrpc("resources/read", {"uri": "item://a"})),
        ("prompt", jsonrpc("prompts/get", {"name": "probe_prompt", "arguments": {"topic": "a"}})),
        (
            "completion",
            jsonrpc(
                "completion/complete",
                {
                    "ref": {"type": "ref/prompt", "name": "probe_prompt"},
                    "argument": {"name": "topic", "value": "a"},
                },
            ),
        ),
        ("subscription", jsonrpc("resources/subscribe", {"uri": "probe://static"})),
    ]


# ---- coverage: every surface and refusal class is in the transcript, or here with the reason why not --

SURFACES = ("tool", "resource", "resource_template", "prompt", "completion", "subscription")
CLASSES = (
    "unknown item",
    "no principal",
    "missing scope",
    "bad argument",
    "broken schema rule",
    "rate limit (per item)",
    "rate limit (per principal)",
    "in-flight cap",
    "audit store down",
    "timeout",
    "request sent as a notification",
)
RUNS_NOTHING = ("completion", "subscription")
NOT_APPLICABLE: dict[tuple[str, str, str], str] = {
    ("stdio", "*", "no principal"): "stdio's caller is always the local user",
    ("stdio", "*", "missing scope"): "the local user holds every scope",
    ("*", "resource", "bad argument"): "a static resource has no arguments",
    ("*", "resource_template", "unknown item"): "a URI no template matches is an unknown resource",
    **{
        ("*", surface, "broken schema rule"): "schema_keywords is for tools only"
        for surface in SURFACES
        if surface != "tool"
    },
    **{
        ("*", surface, "rate limit (per item)"): "counted against the principal only"
        for surface in RUNS_NOTHING
    },
    **{
        ("*", surface, refusal): "checked only before a tool, a read or a prompt runs"
        for surface in RUNS_NOTHING
        for refusal in ("in-flight cap", "audit store down")
    },
    ("*", "subscription", "timeout"): "a subscription runs no function of the author's",
}


def not_applicable(transport: str, surface: str, refusal: str) -> str | None:
    for key in ((transport, surface, refusal), (transport, "*", refusal), ("*", surface, refusal)):
        if key in NOT_APPLICABLE:
            return NOT_APPLICABLE[key]
    return None


def check_coverage(transport: str, transcript: dict[str, dict[str, Any]]) -> None:
    recorded = {tuple(case.split(" / ", 1)) for case in transcript}
    for surface in SURFACES:
        for refusal in CLASSES:
            reason = not_applicable(transport, surface, refusal)
            assert ((surface, refusal) in recorded) != (reason is not None), (
                transport,
                surface,
                refusal,
                reason,
            )


# ---- the golden file ------------------------------------------------------------------------------


def compare(transport: str, found: dict[str, dict[str, Any]]) -> None:
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("MCP_TEMPLATE_WRITE_TRANSCRIPT") == "1":
        golden[transport] = found
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    expected = golden.get(transport)
    if found != expected:
        before = json.dumps(expected, indent=1, sort_keys=True).splitlines()
        after = json.dumps(found, indent=1, sort_keys=True).splitlines()
        # Enough context that each hunk shows the case it is in.
        diff = "\n".join(
            difflib.unified_diff(before, after, f"{GOLDEN.name} [{transport}]", "this run", n=12, lineterm="")
        )
        pytest.fail(
            f"the {transport} refusal transcript changed (MCP_TEMPLATE_WRITE_TRANSCRIPT=1 rewrites it "
            f"after an intended change):\n{diff}",
            pytrace=False,
        )


# ---- fixtures and tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = {**ANSWER_SETS["both"], "project_name": "Acme Refusals"}
    return project_with_tools(
        venv,
        tmp_path_factory.mktemp("refusals") / "project",
        name="refusal_probes",
        source=PROBES,
        answers=answers,
    )


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("refusals-redis")) as server:
        yield server


def spend(server: Server, key: str) -> None:
    """Ping as `key` until its principal's budget is spent (one connection: a few milliseconds a ping)."""
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {key}"}
    with httpx2.Client(headers=headers, timeout=30) as http:
        for _ in range(10_000):
            if http.post(server.url, json=jsonrpc("ping")).status_code == 429:
                return
    raise AssertionError("the per-principal limit never answered 429")


def key_entry(name: str, key: str, scopes: str = "") -> str:
    return f"{name}:sha256:{hashlib.sha256(key.encode()).hexdigest()}" + (f":{scopes}" if scopes else "")


@contextlib.asynccontextmanager
async def stdio_client_logging_to(
    venv: Venv, project: Path, env: dict[str, str], log: Path
) -> AsyncIterator[Client]:
    with log.open("w") as errlog:
        # Handshake era: resources/subscribe exists there only. One process serves the whole transcript.
        async with Client(
            stdio_client(stdio_params(venv, project, env), errlog=errlog), mode="legacy"
        ) as client:
            yield client


async def test_stdio_refusal_transcript(
    project: Path, venv: Venv, redis_server: RedisServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {
        **read_env_file(project),
        **SETTINGS,
        "MCP_RATE_LIMIT": STDIO_LIMIT,
        "MCP_TRANSPORT": "stdio",
        "MCP_DATA_DIR": str(data),
        "MCP_SECURITY_EVENTS_URL": redis_server.url.replace("/0", "/1"),
    }
    log = tmp_path / "stderr.log"
    async with stdio_client_logging_to(venv, project, env, log) as client:
        t = Transcript(StdioTrail(log))
        await t.drain()
        # No principal and missing scope do not apply: stdio's caller is the local user, with every scope.
        await common_cases(t, client, client, data)
        await audit_down_cases(t, client, redis_server)
        await t.drain()
        # The per-client limit, spent last: every request counts against the one local principal.
        with anyio.fail_after(60), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ping is handshake-era only, as this connection is
            while True:
                try:
                    await client.send_ping()
                except MCPError:
                    break
        await t.drain()
        for surface, request in principal_limit_requests(client, client):
            await t.record(surface, "rate limit (per principal)", request())
    check_coverage("stdio", t.result())
    compare("stdio", t.result())


async def test_http_refusal_transcript(
    project: Path, venv: Venv, redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = {name: secrets.token_urlsafe(32) for name in ("main", "narrow", "flood", "admin")}
    env = {
        **read_env_file(project),
        **SETTINGS,
        "MCP_RATE_LIMIT": HTTP_LIMIT,
        "MCP_DATA_DIR": str(tmp_path),
        "MCP_SECURITY_EVENTS_URL": redis_server.url,
        "MCP_API_KEYS": ",".join(
            [
                key_entry("main", keys["main"]),
                key_entry("flood", keys["flood"]),
                key_entry("narrow", keys["narrow"], "other.scope"),
            ]
        ),
        "MCP_ADMIN_API_KEYS": keys["admin"],
    }
    with running_server(venv, project, env, port=free_port(), log_dir=tmp_path) as server:
        t = Transcript(HttpTrail(server, keys["admin"]))
        await t.drain()
        async with (
            http_client(server.url, keys["main"]) as client,
            http_client(server.url, keys["main"], mode="legacy") as legacy,
        ):
            await common_cases(t, client, legacy, tmp_path)
            # no principal: the perimeter answers 401 before the guard, whatever the body asks for
            for surface, body in raw_requests():
                await t.record(surface, "no principal", anyio.to_thread.run_sync(post_mcp, server, body))
            # missing scope: an API key cannot step up, so the guard refuses in band, naming the scope
            async with (
                http_client(server.url, keys["narrow"]) as narrow,
                http_client(server.url, keys["narrow"], mode="legacy") as narrow_legacy,
            ):
                for surface, request in principal_limit_requests(narrow, narrow_legacy):
                    await t.record(surface, "missing scope", request())
            await audit_down_cases(t, client, redis_server)
            await t.drain()
        # The per-client limit: the perimeter counts every request of a principal, and answers 429.
        flood = keys["flood"]
        await anyio.to_thread.run_sync(spend, server, flood)
        await t.drain()
        for surface, body in raw_requests():
            request = anyio.to_thread.run_sync(lambda b=body: post_mcp(server, b, flood))
            await t.record(surface, "rate limit (per principal)", request)
    check_coverage("http", t.result())
    compare("http", t.result())
