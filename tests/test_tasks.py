"""The tasks extension (SEP-2663) on a rendered HTTP server, with a 2026-07-28 client on the wire.

The sandbox sample runs as a task to completion and is cancelled mid-run (real bubblewrap); a destructive
tool asks for consent inside its task, answered through tasks/update; another principal's requests are
answered exactly as an unknown task's; forged and replayed updates change nothing; live tasks are capped.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest

from support import ANSWER_SETS, Server, Venv, http_client, read_env_file, running_server, text_of
from support.projects import installed_project
from support.tasks_client import TasksClient
from test_tools_sandbox import SETTINGS as SANDBOX

pytestmark = pytest.mark.anyio

TOOLS = '''"""Tools that run as tasks (test-only)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from ..security.guard import Guard
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True, task="optional", timeout=60)
    async def slow_task(seconds: Annotated[int, Field(ge=0, le=30)]) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}s"

    @guard.tool(read_only=False, destructive=True, task="optional", confirm_message="Erase {name}?")
    async def erase(name: Annotated[str, Field(max_length=50)]) -> str:
        """Erase a thing, once the user confirms."""
        return f"erased {name}"

    @guard.tool(read_only=True, task="optional")
    async def leaky() -> str:
        """Answer with credential-shaped text (the guard removes it, in a task too)."""
        return "token=tok_9f8e7d6c5b4a39281706 and Bearer abcdefghijklmnopqrstuvwxyz012345"

    @guard.tool(read_only=True, task="optional")
    async def keep_quiet(note: Annotated[str, Field(max_length=100)]) -> str:
        """Take a note, and answer without it (the store must not keep the arguments)."""
        return "noted"
'''
MAX_PER_PRINCIPAL = 3


@pytest.fixture(scope="module")
def server(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    assert shutil.which("bwrap"), "bubblewrap is required for these tests: apt-get install bubblewrap"
    base = tmp_path_factory.mktemp("tasks")
    # A name of its own: the shared venv installs one project per package, and http_all's is other tests'.
    answers = {**ANSWER_SETS["http_all"], "project_name": "Acme Tasks"}
    project = installed_project(venv, base, answers, {"task_tools": TOOLS})
    env = read_env_file(project)
    other = secrets.token_urlsafe(32)
    env.update(
        SANDBOX,
        MCP_API_KEYS=f"{env['MCP_API_KEYS']},{other}",
        MCP_MAX_TASKS_PER_PRINCIPAL=str(MAX_PER_PRINCIPAL),
        MCP_TASK_POLL_INTERVAL_MS="100",
    )
    with running_server(venv, project, env, log_dir=base) as running:
        yield running


def keys(server: Server) -> list[str]:
    # As a client sends each: without the name the copy writes before its key (`test:mcp_...`).
    return [
        entry.rpartition(":")[2] if ":mcp_" in entry else entry
        for entry in server.env["MCP_API_KEYS"].split(",")
    ]


@pytest.fixture
def alice(server: Server) -> TasksClient:
    return TasksClient(server.url, keys(server)[0])


@pytest.fixture
def bob(server: Server) -> TasksClient:
    return TasksClient(server.url, keys(server)[1])


def events(server: Server, **match: Any) -> list[dict[str, Any]]:
    lines = [line for line in server.log().splitlines() if line.startswith('{"logger":"security"')]
    found = [json.loads(line) for line in lines]
    return [
        e for e in found if all(e.get(k) == v or e.get("details", {}).get(k) == v for k, v in match.items())
    ]


async def started(client: TasksClient, tool: str, arguments: dict[str, Any]) -> str:
    answer = await client.call(tool, arguments)
    created = answer["result"]
    assert created["resultType"] == "task" and created["status"] == "working", answer
    assert len(created["taskId"]) >= 22  # at least 128 bits, URL-safe base64
    assert {"createdAt", "lastUpdatedAt", "ttlMs", "pollIntervalMs"} <= created.keys()
    assert "result" not in created and "requestState" not in created
    task_id: str = created["taskId"]
    return task_id


async def test_the_sandbox_runs_as_a_task_to_completion(server: Server, alice: TasksClient) -> None:
    task_id = await started(alice, "run_python", {"code": "print(6 * 7)"})
    task = await alice.until(task_id, "completed")
    assert task["status"] == "completed", task
    text = task["result"]["content"][0]["text"]
    assert text.startswith("<untrusted-data") and "42" in text and "exit code 0" in text, text
    assert task["result"]["isError"] is False
    assert len(events(server, event="task_created", task=task_id)) == 1
    called = [
        e for e in events(server, event="tool_called", tool="run_python") if e["details"].get("outcome")
    ]
    assert any(e["details"].get("sandbox_outcome") == "ok" for e in called), called


async def test_a_task_result_is_sanitised_like_any_result(alice: TasksClient) -> None:
    task = await alice.until(await started(alice, "leaky", {}), "completed")
    text = task["result"]["content"][0]["text"]
    assert "tok_9f8e7d6c5b4a39281706" not in text and "abcdefghijklmnopqrstuvwxyz012345" not in text, text


async def test_a_sandbox_task_is_cancelled_mid_run(server: Server, alice: TasksClient) -> None:
    task_id = await started(alice, "run_python", {"code": "import time\ntime.sleep(4)\nprint('late')"})
    await anyio.sleep(0.5)
    ack = await alice.send("tasks/cancel", {"taskId": task_id})
    assert ack["result"] == {"resultType": "complete", "_meta": ack["result"]["_meta"]}, ack
    task = (await alice.get(task_id))["result"]
    assert task["status"] == "cancelled" and "result" not in task, task
    await anyio.sleep(5)  # past the program's own end: the work was stopped, nothing is written later
    task = (await alice.get(task_id))["result"]
    assert task["status"] == "cancelled" and "result" not in task, task
    assert events(server, event="task_cancelled", task=task_id)
    assert [e for e in events(server, tool="run_python") if e["details"].get("outcome") == "cancelled"]
    again = await alice.send("tasks/cancel", {"taskId": task_id})  # idempotent
    assert again["result"]["resultType"] == "complete"


async def test_consent_inside_a_task_is_answered_through_tasks_update(alice: TasksClient) -> None:
    task_id = await started(alice, "erase", {"name": "draft"})
    task = await alice.until(task_id, "input_required")
    assert task["status"] == "input_required", task
    [(key, question)] = task["inputRequests"].items()
    assert question["method"] == "elicitation/create" and question["params"]["message"] == "Erase draft?"
    update = {"taskId": task_id, "inputResponses": {key: {"action": "accept", "content": {"confirm": True}}}}
    assert (await alice.send("tasks/update", update))["result"]["resultType"] == "complete"
    task = await alice.until(task_id, "completed")
    assert task["status"] == "completed" and task["result"]["content"][0]["text"] == "erased draft", task

    declined_id = await started(alice, "erase", {"name": "final"})
    [key] = (await alice.until(declined_id, "input_required"))["inputRequests"]
    await alice.send("tasks/update", {"taskId": declined_id, "inputResponses": {key: {"action": "decline"}}})
    task = await alice.until(declined_id, "completed")
    assert task["result"]["isError"] is True and "did not confirm" in task["result"]["content"][0]["text"]


async def test_another_principal_is_answered_as_for_an_unknown_task(
    server: Server, alice: TasksClient, bob: TasksClient
) -> None:
    task_id = await started(alice, "erase", {"name": "mine"})
    [key] = (await alice.until(task_id, "input_required"))["inputRequests"]
    unknown = secrets.token_urlsafe(24)
    answers = {}
    for who, target in (("bob", task_id), ("unknown", unknown)):
        answers[who] = [
            (await bob.send("tasks/get", {"taskId": target}))["error"],
            (
                await bob.send(
                    "tasks/update", {"taskId": target, "inputResponses": {key: {"action": "accept"}}}
                )
            )["error"],
            (await bob.send("tasks/cancel", {"taskId": target}))["error"],
        ]
    assert answers["bob"] == answers["unknown"], answers
    assert answers["bob"][0] == {"code": -32602, "message": "Unknown task."}
    task = (await alice.get(task_id))["result"]
    assert task["status"] == "input_required" and key in task["inputRequests"]  # untouched by bob
    assert events(server, event="authorization_denied", reason="another principal's task")
    await alice.send("tasks/cancel", {"taskId": task_id})


async def test_forged_and_replayed_updates_change_nothing(alice: TasksClient) -> None:
    first = await started(alice, "erase", {"name": "one"})
    second = await started(alice, "erase", {"name": "two"})
    [key] = (await alice.until(first, "input_required"))["inputRequests"]
    [other_key] = (await alice.until(second, "input_required"))["inputRequests"]
    yes = {"action": "accept", "content": {"confirm": True}}
    forged = {"taskId": first, "inputResponses": {"guard_confirmation": yes, other_key: yes}}
    assert (await alice.send("tasks/update", forged))["result"]["resultType"] == "complete"
    assert (await alice.get(first))["result"]["inputRequests"].keys() == {key}
    answer = {"taskId": first, "inputResponses": {key: yes}}
    await alice.send("tasks/update", answer)
    done = await alice.until(first, "completed")
    # Replayed: on the finished task, and on the other task's pending question.
    await alice.send("tasks/update", answer)
    await alice.send("tasks/update", {"taskId": second, "inputResponses": {key: yes}})
    assert (await alice.get(first))["result"]["result"] == done["result"]
    assert (await alice.get(second))["result"]["inputRequests"].keys() == {other_key}
    await alice.send("tasks/cancel", {"taskId": second})


async def test_live_tasks_are_capped_per_principal(server: Server, bob: TasksClient) -> None:
    running = [await started(bob, "slow_task", {"seconds": 20}) for _ in range(MAX_PER_PRINCIPAL)]
    refused = await bob.call("slow_task", {"seconds": 1})
    assert refused["result"]["isError"] is True
    assert refused["result"]["content"][0]["text"] == (
        f"Too many tasks running for you ({MAX_PER_PRINCIPAL}); wait for one to end."
    )
    await bob.send("tasks/cancel", {"taskId": running[0]})
    running[0] = await started(bob, "slow_task", {"seconds": 20})  # room again
    for task_id in running:
        await bob.send("tasks/cancel", {"taskId": task_id})


async def test_the_task_surface_is_gated(server: Server, alice: TasksClient) -> None:
    """-32021 without the extension, -32020 for a wrong Mcp-Name, -32601 for the removed methods; an
    initialize-era client and a 2026-07-28 client without the extension wait for a plain result."""
    task_id = await started(alice, "slow_task", {"seconds": 0})
    plain = TasksClient(server.url, keys(server)[0], tasks=False)
    assert (await plain.get(task_id))["error"]["code"] == -32021
    assert (await plain.call("slow_task", {"seconds": 0}))["result"]["content"][0]["text"] == "slept 0s"
    wrong = await alice.send("tasks/get", {"taskId": task_id}, name="another-task")
    assert wrong["error"]["code"] == -32020
    for removed in ("tasks/result", "tasks/list"):
        assert (await alice.send(removed, {"taskId": task_id}))["error"]["code"] == -32601
    async with http_client(server.url, keys(server)[0], mode="legacy") as legacy:
        result = await legacy.call_tool("slow_task", {"seconds": 0})
    assert text_of(result) == "slept 0s"


async def test_metrics_count_tasks_by_status(server: Server, alice: TasksClient) -> None:
    done = await alice.until(await started(alice, "slow_task", {"seconds": 0}), "completed")
    assert done["status"] == "completed"
    admin = server.env["MCP_ADMIN_API_KEYS"].split(",")[0]
    response = await anyio.to_thread.run_sync(
        lambda: httpx2.get(server.base + "/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    )
    counts = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith("mcp_tasks_total{")
    }
    assert counts['status="created"'] >= 1 and counts['status="completed"'] >= 1, counts
