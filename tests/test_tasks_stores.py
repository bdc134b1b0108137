"""Where tasks live: two replicas behind a round-robin balancer share them through Redis (created on
one, read, answered and cancelled through the other); SQLite keeps finished tasks across a restart and
settles the ones left running as failed; neither store holds a credential, a header or the arguments."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from support import (
    ANSWER_SETS,
    Server,
    Venv,
    client_key,
    eventually,
    free_port,
    package_of,
    read_env_file,
    running_server,
)
from support.projects import installed_project
from support.proxy import running_proxy
from support.redis import running_redis
from support.tasks_client import TasksClient
from test_tasks import TOOLS, started

pytestmark = pytest.mark.anyio
MARKER = "argument-marker-" + secrets.token_hex(4)  # an argument value: never stored with the task


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tasks-stores")
    answers = {**ANSWER_SETS["http_none"], "project_name": "Acme Task Stores"}  # a package of its own
    return installed_project(venv, base, answers, {"task_tools": TOOLS})


def env_of(project: Path, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_RATE_LIMIT": "100000/minute",
        "MCP_TASK_POLL_INTERVAL_MS": "100",
        **extra,
    }


def logged(servers: list[Server], **match: Any) -> list[dict[str, Any]]:
    found = []
    for server in servers:
        for line in server.log().splitlines():
            if line.startswith('{"logger":"security"'):
                event = json.loads(line)
                details = event.get("details", {})
                if all(event.get(k) == v or details.get(k) == v for k, v in match.items()):
                    found.append(event)
    return found


def assert_no_credentials(stored: bytes, env: dict[str, str]) -> None:
    entries = (*env["MCP_API_KEYS"].split(","), *env["MCP_ADMIN_API_KEYS"].split(","))
    raw = {entry.rpartition(":")[2] for entry in entries if ":mcp_" in entry}  # a named key kept raw
    for secret in {*entries, *raw}:
        assert secret.encode() not in stored
    for word in (b"Bearer", b"authorization", b"Authorization", b"mcp-name", MARKER.encode()):
        assert word not in stored, word


@pytest.fixture(scope="module")
def replicas(project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("replicas")
    port = free_port()
    with running_redis(base) as redis:
        env = env_of(project, MCP_TASKS_URL=redis.url, MCP_RATE_LIMIT_STORAGE=redis.url)
        with (
            running_server(venv, project, env, log_dir=base) as one,
            running_server(venv, project, env, log_dir=base) as two,
            running_proxy(port, [one.base, two.base], {}, base / "proxy.log"),
        ):
            yield [one, two], f"http://127.0.0.1:{port}/mcp", redis, env


async def test_replicas_share_tasks_through_redis(replicas: Any) -> None:
    servers, url, redis, env = replicas
    client = TasksClient(url, client_key(env))
    # Each request goes to the other replica: every get, update and cancel below is served by the
    # replica that did not create the task.
    for _ in range(3):
        task_id = await started(client, "slow_task", {"seconds": 0})
        assert (await client.get(task_id))["result"]["taskId"] == task_id
    quiet = await started(client, "keep_quiet", {"note": MARKER})
    assert (await client.until(quiet, "completed"))["result"]["content"][0]["text"] == "noted"
    consent = await started(client, "erase", {"name": "draft"})
    [key] = (await client.until(consent, "input_required"))["inputRequests"]
    yes = {"action": "accept", "content": {"confirm": True}}
    await client.send("tasks/update", {"taskId": consent, "inputResponses": {key: yes}})
    done = await client.until(consent, "completed")
    assert done["result"]["content"][0]["text"] == "erased draft", done

    long = await started(client, "slow_task", {"seconds": 20})
    await anyio.sleep(0.3)
    await client.send("tasks/cancel", {"taskId": long})

    def stopped() -> bool:  # the replica running the work stops it and records the cancelled call
        return any(e["details"].get("outcome") == "cancelled" for e in logged(servers, tool="slow_task"))

    with anyio.fail_after(5):
        await eventually(stopped, 0.1)
    assert (await client.get(long))["result"]["status"] == "cancelled"
    # And without the balancer: created on one replica, answered and read on the other; created on the
    # other, cancelled from the first, and its work (which runs only where it was created) stopped there.
    one, two = (TasksClient(server.url, client_key(env)) for server in servers)
    direct = await started(one, "erase", {"name": "direct"})
    [key] = (await two.until(direct, "input_required"))["inputRequests"]
    await two.send("tasks/update", {"taskId": direct, "inputResponses": {key: yes}})
    assert (await one.until(direct, "completed"))["result"]["content"][0]["text"] == "erased direct"
    remote = await started(two, "slow_task", {"seconds": 20})
    await anyio.sleep(0.3)
    assert (await one.send("tasks/cancel", {"taskId": remote}))["result"]["resultType"] == "complete"

    def remote_stopped() -> bool:
        found = logged(servers, tool="slow_task", task=remote)
        return any(e["details"].get("outcome") == "cancelled" for e in found)

    with anyio.fail_after(5):
        await eventually(remote_stopped, 0.1)

    stored = b"".join(
        key + b"=" + (redis.client().get(key) or b"|".join(redis.client().smembers(key)) or b"")
        for key in redis.client().keys("mcp:tasks:*")
        if redis.client().type(key) in (b"string", b"set")
    )
    assert consent.encode() in stored and quiet.encode() in stored  # the scan read the tasks
    assert_no_credentials(stored, env)


async def test_sqlite_keeps_finished_tasks_across_a_restart(
    project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("sqlite-restart")
    env = env_of(project, MCP_TASKS_URL=f"sqlite:///{base / 'tasks.db'}")
    with running_server(venv, project, env, log_dir=base) as server:
        client = TasksClient(server.url, client_key(env))
        quiet = await started(client, "keep_quiet", {"note": MARKER})
        await client.until(quiet, "completed")
        finished = await started(client, "erase", {"name": "draft"})
        [key] = (await client.until(finished, "input_required"))["inputRequests"]
        yes = {"action": "accept", "content": {"confirm": True}}
        await client.send("tasks/update", {"taskId": finished, "inputResponses": {key: yes}})
        done = await client.until(finished, "completed")
        running = await started(client, "slow_task", {"seconds": 30})
    with running_server(venv, project, env, log_dir=base) as server:
        client = TasksClient(server.url, client_key(env))
        assert (await client.get(finished))["result"]["result"] == done["result"]
        lost = (await client.get(running))["result"]
    assert lost["status"] == "failed" and "restarted" in lost["error"]["message"], lost
    stored = b"".join(path.read_bytes() for path in base.glob("tasks.db*"))
    assert finished.encode() in stored and quiet.encode() in stored
    assert_no_credentials(stored, env)


async def test_a_flood_of_creations_and_polls_is_bounded(
    project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The server-wide cap on live tasks, and polls sooner than the advertised interval counted twice
    against the rate limit: each refused with its exact message, and nothing else grows."""
    base = tmp_path_factory.mktemp("flood")
    env = env_of(
        project,
        MCP_MAX_TASKS="2",
        MCP_RATE_LIMIT="30/minute",
        MCP_TASK_POLL_INTERVAL_MS="1000",
        MCP_TASK_TTL_SECONDS="1",
    )
    with running_server(venv, project, env, log_dir=base) as server:
        client = TasksClient(server.url, client_key(env))
        # A finished task is kept for its TTL, then removed with an event: its id is then unknown.
        brief = await started(client, "slow_task", {"seconds": 0})
        await anyio.sleep(2.5)
        assert (await client.get(brief))["error"] == {"code": -32602, "message": "Unknown task."}
        assert logged([server], event="task_expired", task=brief)
        running = [await started(client, "slow_task", {"seconds": 20}) for _ in range(2)]
        refused = (await client.call("slow_task", {"seconds": 1}))["result"]
        assert refused["isError"] and refused["content"][0]["text"] == (
            "Too many tasks running on this server (2); try again later."
        )
        answers = [await client.send("tasks/get", {"taskId": running[0]}) for _ in range(20)]
        events = logged([server], event="rate_limit_exceeded")
    # 5 requests, then polls: the first counts once, each later one twice (once at the HTTP perimeter, once
    # more in the guard), so the 30 per minute run out after 13 polls (25 if a fast poll counted once).
    # Then the guard refuses (JSON-RPC error), and once the limit is spent the perimeter does (HTTP 429).
    assert [a for a in answers if "result" in a] == answers[:13], answers
    for refusal in answers[13:]:
        error = refusal["error"]
        assert error == "rate_limited" or error["message"].startswith("Rate limit reached (per-client"), error
    assert events, "each refusal writes its event"


def test_check_reports_the_task_store(project: Path, venv: Venv, tmp_path: Path) -> None:
    command, _ = package_of(project)
    store = tmp_path / "tasks.db"
    env = {**read_env_file(project), "MCP_TASKS_URL": f"sqlite:///{store}", "MCP_MAX_TASKS": "50"}
    checked = venv.run(venv.bin(command), "check", "--offline", cwd=project, env=env, timeout=120)
    assert (
        f"tasks: SQLite file {store} (survives a restart); at most 10 live per principal and 50 in all, "
        "kept 3600s after they end, polled every 1000 ms"
    ) in checked.stdout, checked.stdout
    redis_elsewhere = {**env, "MCP_TASKS_URL": "memory://", "MCP_RATE_LIMIT_STORAGE": "redis://127.0.0.1:1/0"}
    shared = venv.run(venv.bin(command), "check", "--offline", cwd=project, env=redis_elsewhere, timeout=120)
    assert "MCP_TASKS_URL is not Redis" in " ".join(shared.stdout.split()), shared.stdout
    wrong = venv.run(
        venv.bin(command),
        "check",
        "--offline",
        cwd=project,
        env={**env, "MCP_TASKS_URL": "ftp://x"},
        timeout=120,
    )
    assert wrong.returncode != 0 and "MCP_TASKS_URL" in wrong.stdout + wrong.stderr


async def test_a_task_store_that_goes_down_fails_closed(
    project: Path, venv: Venv, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Redis gone: a call that would become a task is not run (an error result and a failed-call event),
    and a call the client waits for still runs."""
    base = tmp_path_factory.mktemp("store-down")
    with running_redis(base) as redis:
        env = env_of(project, MCP_TASKS_URL=redis.url)
        with running_server(venv, project, env, log_dir=base) as server:
            client = TasksClient(server.url, client_key(env))
            task_id = await started(client, "slow_task", {"seconds": 0})
            redis.stop()
            refused = (await client.call("slow_task", {"seconds": 0}))["result"]
            unread = await client.get(task_id)
            waited = await TasksClient(server.url, client_key(env), tasks=False).call(
                "slow_task", {"seconds": 0}
            )
            failed = logged([server], event="tool_execution_failed", reason="task store unavailable")
    assert refused["isError"] is True
    down = "The task store is unavailable, so no task can start or be read; try again later."
    assert refused["content"][0]["text"] == down
    assert unread["error"] == {"code": -32603, "message": down}
    assert waited["result"]["content"][0]["text"] == "slept 0s"
    assert failed, "the refused call is audited"
