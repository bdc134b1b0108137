"""The Redis audit store for real: a redis-server started here, two server processes sharing one stream.

Fails (never skips) when redis-server is missing; .ci/run installs it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from support import MCP_HEADERS, Server, Venv, package_of, post_mcp, read_env_file, running_server, wait_for
from support.redis import RedisServer, start_redis
from test_audit import HIGH_LIMITS, all_events, call, env_keys, get_events

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("both")


def redis_env(project: Path, redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {**read_env_file(project), "MCP_SECURITY_EVENTS_URL": redis_server.url, **HIGH_LIMITS, **extra}


@pytest.fixture(scope="module")
def replicas(project: Path, venv: Venv, redis_server: RedisServer) -> Iterator[tuple[Server, Server]]:
    redis_server.client().delete("mcp:security-events")
    env = redis_env(project, redis_server)
    with running_server(venv, project, env) as first, running_server(venv, project, env) as second:
        yield first, second


def tool_calls(events: list[dict[str, Any]]) -> set[str]:
    return {event["request_id"] for event in events if event["event"] == "tool_called"}


async def test_two_replicas_share_one_stream_and_serve_each_others_events(
    replicas: tuple[Server, Server], project: Path
) -> None:
    first, second = replicas
    tool_key, admin = env_keys(project)
    for i in range(12):
        assert post_mcp(first, call(id=5000 + i), tool_key).status_code == 200
        assert post_mcp(second, call(id=6000 + i), tool_key).status_code == 200
    from_first = all_events(first, admin, limit=5)  # small pages: the cursor crosses both writers
    from_second = all_events(second, admin, limit=5)
    expected = {str(5000 + i) for i in range(12)} | {str(6000 + i) for i in range(12)}
    assert expected <= tool_calls(from_first)
    assert [e["id"] for e in from_first] == [e["id"] for e in from_second]
    assert len({e["id"] for e in from_first}) == len(from_first)
    # Newest first (order=desc): the same events, in exactly the reverse order, across both streams.
    # Refusals: an address's first of the window is kept with principals' events, the next goes to the
    # anonymous stream (events.py), so the pages below cross both streams.
    for number in (6100, 6101):
        anonymous = httpx2.post(first.url, json=call(id=number), timeout=30)
        assert anonymous.status_code == 401
    oldest_first = [e["id"] for e in all_events(second, admin)]
    newest_first = [e["id"] for e in all_events(first, admin, limit=5, order="desc")]
    assert newest_first == oldest_first[::-1]
    assert (
        get_events(first, admin, limit=1, order="desc").json()["events"][0]["event"]
        == "authentication_failed"
    )


async def test_paging_the_shared_stream_while_both_replicas_write(
    replicas: tuple[Server, Server], project: Path
) -> None:
    first, second = replicas
    tool_key, admin = env_keys(project)
    stop, arriving = anyio.Event(), anyio.Event()
    written = 0

    async def keep_writing(server: Server) -> None:
        nonlocal written
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {tool_key}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            while not stop.is_set() and written < 100:  # bounded, so the pager can catch up
                await http.post(server.url, json=call(id=7000 + written))
                written += 1
                if written >= 5:
                    arriving.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(keep_writing, first)
        tasks.start_soon(keep_writing, second)
        with anyio.fail_after(30):
            await arriving.wait()  # paging starts while events are arriving
        # Small pages, following next_cursor until it is null, while events keep arriving.
        seen = await anyio.to_thread.run_sync(functools.partial(all_events, first, admin, limit=4))
        stop.set()
    assert written > 0
    ids = [event["id"] for event in seen]
    assert len(ids) == len(set(ids))
    assert [e["id"] for e in all_events(second, admin)][: len(ids)] == ids


def test_tools_fail_closed_while_redis_is_down_and_recover(project: Path, venv: Venv, tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis")
    tool_key, admin = env_keys(project)
    try:
        with running_server(venv, project, redis_env(project, redis_server), log_dir=tmp_path) as server:
            assert post_mcp(server, call(id=1), tool_key).json()["result"]["isError"] is False
            redis_server.stop()
            # Within a second of the last good write the tool may run, but its result is withheld.
            first_refusal = post_mcp(server, call(id=2), tool_key).json()["result"]
            assert first_refusal["isError"] is True
            assert "audit trail is unavailable" in first_refusal["content"][0]["text"]
            # Once a write has failed, tools are refused before they run.
            refused = post_mcp(server, call(id=4), tool_key).json()["result"]
            assert refused["isError"] is True
            assert "tools are not run" in refused["content"][0]["text"]
            # A perimeter refusal that cannot be recorded is still a refusal: 503, never a 500.
            unrecorded = post_mcp(server, call(id=5))
            assert unrecorded.status_code == 503 and unrecorded.json()["error"] == "unavailable"
            ready = httpx2.get(server.base + "/health?ready", timeout=30)
            assert ready.status_code == 503 and ready.json()["checks"]["audit"] == "unavailable"
            redis_server.start()
            wait_for(
                lambda: not post_mcp(server, call(id=3), tool_key).json()["result"]["isError"],
                30,
                "tools to run again once Redis is back",
                interval=0.2,
            )
            stored = all_events(server, admin)
            log = server.log()
        assert "2" not in tool_calls(stored), "a tool ran while its event could not be stored"
        assert "CRITICAL" in log and "audit store" in log
        # The refusal could not be stored, but its log line still went out, marked as not stored.
        unsaved = [json.loads(line) for line in log.splitlines() if line.startswith('{"logger":"security"')]
        assert any(e.get("stored") is False and e["request_id"] == "2" for e in unsaved)
        assert any(
            e.get("stored") is False and e["request_id"] == "4" and e["severity"] == "critical"
            for e in unsaved
        )
        assert "3" in tool_calls(stored)
    finally:
        redis_server.stop()


async def test_an_unreachable_redis_stops_start_up(project: Path, venv: Venv, tmp_path: Path) -> None:
    command, _ = package_of(project)
    redis_server = start_redis(tmp_path / "redis")
    redis_server.stop()  # a port that was just free: nothing listens on it now
    env = {
        **read_env_file(project),
        "MCP_SECURITY_EVENTS_URL": f"redis://:{'pw-' * 6}@127.0.0.1:{redis_server.port}/0",
    }
    result = venv.run(venv.bin(command), "serve", "--transport", "http", cwd=project, env=env, timeout=60)
    assert result.returncode != 0
    assert "MCP_SECURITY_EVENTS_URL" in result.stderr and f"127.0.0.1:{redis_server.port}" in result.stderr
    assert "pw-pw-" not in result.stderr
    assert "Traceback" not in result.stderr


async def test_refusals_have_a_capped_stream_of_their_own_and_evict_no_principal_event(
    project: Path, venv: Venv, redis_server: RedisServer
) -> None:
    from test_hardening import CALL, flood

    tool_key, admin = env_keys(project)
    url = redis_server.url.rsplit("/", 1)[0] + "/5"  # a database of its own
    env = redis_env(
        project,
        redis_server,
        MCP_SECURITY_EVENTS_URL=url,
        MCP_TRUSTED_PROXIES="127.0.0.1",
        MCP_SECURITY_EVENTS_MAX_ROWS="1000",
        MCP_SECURITY_EVENTS_MAX_ANONYMOUS_ROWS="1000",
    )
    with running_server(venv, project, env, ready_kwargs={"timeout": 120}) as server:
        assert post_mcp(server, CALL, tool_key).status_code == 200
        assert await flood(server, 3_000, concurrency=16, spread=True) == {401: 3_000}
        events = all_events(server, admin, limit=137)  # pages that end anywhere in the merged streams
    assert [e["event"] for e in events if e["event"] == "tool_called"] == ["tool_called"]
    refusals = [e for e in events if e["event"] == "authentication_failed"]
    # The anonymous stream trimmed to its cap (a hundredth past it at most), and up to 100 notable refusals
    # kept with principals' events (events.py, MAX_NOTABLE_PER_WINDOW).
    assert 1_000 <= len(refusals) <= 1_010 + 100, len(refusals)
    assert len({e["id"] for e in events}) == len(events)  # no event twice across pages
    # Trimming recorded the last entry it removed as the anchor: the kept entries still verify.
    verified = audit_verify(project, venv, url, *published_heads(server))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "chain 'anonymous'" in verified.stdout and "pruned up to event" in verified.stdout


def published_heads(*servers: Server) -> list[str]:
    """Every audit chain head the servers wrote to their logs (`audit_chain_head` lines)."""
    return [
        f"--head={token}"
        for server in servers
        for line in server.log().splitlines()
        if line.startswith('{"logger":"audit"')
        for token in json.loads(line)["audit_chain_head"]
    ]


def audit_verify(project: Path, venv: Venv, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command, _ = package_of(project)
    return venv.run(venv.bin(command), "audit", "verify", url, *extra, cwd=project, timeout=120)


async def test_audit_verify_passes_on_a_trail_two_replicas_wrote_under_load_and_finds_a_cut(
    project: Path, venv: Venv, redis_server: RedisServer
) -> None:
    tool_key, _ = env_keys(project)
    url = redis_server.url.rsplit("/", 1)[0] + "/6"  # a database of its own
    env = redis_env(project, redis_server, MCP_SECURITY_EVENTS_URL=url)
    with running_server(venv, project, env) as first, running_server(venv, project, env) as second:

        def one(number: int) -> int:
            server = (first, second)[number % 2]
            token = None if number % 10 == 9 else tool_key  # some refusals: the anonymous chain too
            return post_mcp(server, call(id=9000 + number), token).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:  # both replicas write at once
            statuses = list(pool.map(one, range(400)))
    assert statuses.count(200) == 360 and statuses.count(401) == 40
    heads = published_heads(first, second)
    assert any(head.startswith("--head=events:") for head in heads)
    verified = audit_verify(project, venv, url, *heads)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Every event of both replicas, in one of the two chains (a source's first refusal is kept with the
    # principals' events).
    counts = [int(n) for n in re.findall(r"(\d+) events verified", verified.stdout)]
    assert len(counts) == 2 and sum(counts) == 400, verified.stdout
    client = redis_server.client()
    client.select(6)
    newest = client.xrevrange("mcp:security-events", count=1)[0][0]
    client.hdel("mcp:security-events:chain", "head_id")  # the store's own head record goes too
    client.xdel("mcp:security-events", newest)  # the tail cut: only a published head can tell
    assert audit_verify(project, venv, url).returncode == 0, "a clean cut looks like a shorter trail"
    cut = audit_verify(project, venv, url, *heads)
    assert cut.returncode == 1
    assert "BROKEN: the tail was truncated: chain 'events'" in cut.stdout, cut.stdout
    entries = client.xrange("mcp:security-events", count=100)
    client.xdel("mcp:security-events", entries[50][0])  # one event deleted from the middle
    deleted = audit_verify(project, venv, url)
    assert deleted.returncode == 1
    assert f"BROKEN: chain 'events': a gap before event {entries[51][0].decode()}" in deleted.stdout


BATCHING = """
import asyncio, sys
import redis
from {package}.security.audit.event_stores.redis import RedisEventStore
from {package}.security.audit.records import SecurityEvent

async def main(url):
    store = RedisEventStore(url, max_len=10_000, max_anonymous_len=10_000)
    await store.append(SecurityEvent("warm", "2026-01-01T00:00:00.000000Z", "tool_called", "low", "key:a"))
    counter = redis.Redis.from_url(url)
    counter.config_resetstat()
    at = "2026-01-01T00:00:00.000000Z"
    events = [SecurityEvent(str(n), at, "tool_called", "low", "key:a") for n in range(50)]
    await asyncio.gather(*(store.append(event) for event in events))
    calls = counter.info("commandstats").get("cmdstat_evalsha", {{}}).get("calls", 0)
    print(calls, counter.xlen("mcp:security-events"))
    await store.aclose()

asyncio.run(main(sys.argv[1]))
"""


def test_concurrent_events_go_to_redis_in_one_script_call_per_batch(
    project: Path, venv: Venv, redis_server: RedisServer
) -> None:
    _, package = package_of(project)
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    script = BATCHING.format(package=package)
    result = venv.run(venv.bin("python"), "-c", script, url, cwd=project, timeout=60)
    assert result.returncode == 0, result.stderr
    calls, stored = (int(part) for part in result.stdout.split())
    assert stored == 51
    assert calls == 1, f"50 events at once took {calls} script calls, not one"
