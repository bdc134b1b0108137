"""The official MCP conformance suite (npm @modelcontextprotocol/conformance) judges a rendered HTTP server.

It runs twice, once for each protocol era the server speaks: `--requirements 2026-07-28` (stateless
requests, consent through input-required results) and `--requirements 2025-11-25` (the initialize
handshake, with a session). The rendered project gets the suite's fixture tools, resources and prompts
through the guard (support/conformance_fixtures.py, test code only). The suite cannot send an
Authorization header, so it talks to a header-adding reverse proxy (tests/support/proxy.py, test code
only) in front of the real server. The server is configured as it would be behind that address: the
proxy's origin is the one trusted browser origin, and the per-client rate limit is raised above the
suite's request count (every request comes from the proxy's address).
What cannot pass is listed, with reasons, in tests/conformance-expected-failures.yml.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from mcp.types import PromptReference

from support import (
    BASE,
    TEMPLATE_ROOT,
    Server,
    Venv,
    client_key,
    free_port,
    http_client,
    read_env_file,
    running_server,
    text_of,
)
from support.conformance_fixtures import CONTENT_SOURCE, QUESTIONS, SOURCE, STREAMS_SOURCE, TASKS_SOURCE
from support.node import run_node_tool
from support.projects import installed_project
from support.proxy import running_proxy
from support.tooling import all_events

BASELINE = TEMPLATE_ROOT / "tests" / "conformance-expected-failures.yml"
ERAS = ("2026-07-28", "2025-11-25")
# s5e: content through the guard (security/guard/content.py) and a schema with 2020-12 rules
# (schema_keywords).
S5E_CONTENT = {
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "resources-read-binary",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "json-schema-2020-12",
}
# Scenarios whose pass here is real: each must report at least one check and all of them SUCCESS.
MUST_PASS = {
    "2026-07-28": {
        "completion-complete",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-error",
        "resources-list",
        "prompts-list",
        "dns-rebinding-protection",
        "input-required-result-tampered-state",
        "input-required-result-unsupported-methods",
        "sep-2164-resource-not-found",
        "server-sse-multiple-streams",
        "caching",
        "http-header-validation",
        "tasks-status-notifications",
        "input-required-result-capability-check",  # the guard's question only for clients with elicitation
        "resources-read-text",
        "resources-templates-read",
        "prompts-get-simple",
        "prompts-get-with-args",
        # s5d: questions through the SDK's resolvers, under the suite's keys (guard input_key).
        "input-required-result-basic-elicitation",
        "input-required-result-basic-sampling",
        "input-required-result-basic-list-roots",
        "input-required-result-request-state",
        "input-required-result-multiple-input-requests",
        "input-required-result-multi-round",
        "input-required-result-missing-input-response",
        "input-required-result-result-type",
        "input-required-result-validate-input",
        "input-required-result-non-tool-request",
        # s5f: notifications through the guard's Notify, SEP-2575 statelessness, SEP-2243 headers
        "tools-call-with-progress",
        "server-stateless",
        "http-custom-header-server-validation",
        # the tasks extension (SEP-2663): fixtures in conformance_tasks, through the guard (guard/tasks.py)
        "tasks-capability-negotiation",
        "tasks-dispatch-and-envelope",
        "tasks-lifecycle",
        "tasks-mrtr-composition",
        "tasks-mrtr-input",
        "tasks-request-headers",
        "tasks-request-state-removal",
        "tasks-required-task-error",
        "tasks-wire-fields",
    }
    | S5E_CONTENT,
    "2025-11-25": {
        "server-initialize",
        "ping",
        "logging-set-level",
        "completion-complete",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-error",
        "resources-list",
        "prompts-list",
        "dns-rebinding-protection",
        "server-sse-multiple-streams",  # needs a session: these pass because initialize-era clients get one
        "server-session-lifecycle",
        "resources-read-text",
        "resources-templates-read",
        "prompts-get-simple",
        "prompts-get-with-args",
        # s5d: questions asked mid-call over the session.
        "tools-call-elicitation",
        "tools-call-sampling",
        "elicitation-sep1034-defaults",
        "elicitation-sep1330-enums",
        # s5f: notifications through the guard's Notify, on the session's SSE answer; replay per session
        "tools-call-with-logging",
        "tools-call-with-progress",
        "server-sse-polling",
        "resources-subscribe",  # per session, bounded, admitted like a read (guard.resource_updated)
        "resources-unsubscribe",
    }
    | S5E_CONTENT,
}


@pytest.fixture(scope="module")
def proxied(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    answers = {
        **BASE,
        "project_name": "Acme Conformance",
        "transport": "both",
        "auth": "api_key",
        "sample_tools": [],
    }
    modules = {
        "conformance_fixtures": SOURCE,
        "conformance_content": CONTENT_SOURCE,  # s5e: images, audio, blobs
        "conformance_questions": QUESTIONS,  # s5d: elicitation, sampling, roots
        "conformance_streams": STREAMS_SOURCE,
        "conformance_tasks": TASKS_SOURCE,  # the tasks extension
    }
    project = installed_project(venv, tmp_path_factory.mktemp("conformance-project"), answers, modules)
    env = read_env_file(project)
    proxy_port = free_port()
    # No MCP_TRUSTED_ORIGINS: the suite's requests carry the proxy's own origin, which is same-origin.
    # Every request comes from the proxy with one key: raise its per-client limits above the suite's use.
    env.update(MCP_RATE_LIMIT="100000/minute")  # sessions at their defaults (issue 29)
    logs = tmp_path_factory.mktemp("conformance-logs")
    with running_server(venv, project, env, log_dir=logs) as server:
        auth = {"Authorization": f"Bearer {client_key(env)}"}
        with running_proxy(proxy_port, server.base, auth, logs / "proxy.log") as proxy_base:
            yield server, proxy_base + "/mcp"


@pytest.fixture(scope="module", params=ERAS)
def suite_run(
    request: pytest.FixtureRequest, proxied: tuple[Server, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, int, str, dict[str, list[dict[str, Any]]]]:
    """One run of a revision's required server scenarios: (era, exit code, output, checks by scenario)."""
    era: str = request.param
    server, url = proxied
    out = tmp_path_factory.mktemp(f"conformance-{era}")
    expected = out / "expected-failures.yml"
    expected.write_text(yaml.safe_dump({"server": baseline(era)["server"]}))
    result = run_node_tool(
        "conformance",
        "server",
        "--url",
        url,
        "--requirements",
        era,
        "--expected-failures",
        str(expected),
        "-o",
        str(out),
        cwd=out,
        timeout=600,
    )
    checks: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("server-*/checks.json")):
        scenario = path.parent.name.removeprefix("server-").rsplit("-", 6)[0]
        checks[scenario] = json.loads(path.read_text())
    output = result.stdout + result.stderr + "\n--- server log ---\n" + server.log()[-4000:]
    return era, result.returncode, output, checks


def baseline(era: str) -> dict[str, list[str]]:
    data: dict[str, list[str]] = yaml.safe_load(BASELINE.read_text())
    return {"server": sorted(data[era] or [])}


def failed(checks: list[dict[str, Any]]) -> list[str]:
    return [
        f"{c['id']}: {c['status']} {c.get('errorMessage') or ''}"
        for c in checks
        if c["status"] not in ("SUCCESS", "INFO", "SKIPPED")
    ]


def test_suite_passes_against_the_baseline(suite_run: tuple[str, int, str, dict[str, Any]]) -> None:
    """The suite's own verdict: no unexpected failure, and no listed failure that now passes."""
    _, code, output, checks = suite_run
    assert checks, f"the suite wrote no results:\n{output}"
    assert code == 0, output


def test_required_scenarios_pass_for_real(suite_run: tuple[str, int, str, dict[str, Any]]) -> None:
    """Each scenario of MUST_PASS ran at least one check, and every check succeeded."""
    era, _, output, checks = suite_run
    problems = {
        scenario: failed(checks[scenario]) if checks.get(scenario) else ["did not run, or ran no check"]
        for scenario in sorted(MUST_PASS[era])
    }
    assert not {k: v for k, v in problems.items() if v}, f"{problems}\n{output[-3000:]}"


def test_every_scenario_is_accounted_for(suite_run: tuple[str, int, str, dict[str, Any]]) -> None:
    """A scenario the suite adds in a new version must land in one list or the other, with a reason."""
    era, _, _, checks = suite_run
    listed = MUST_PASS[era] | set(baseline(era)["server"])
    assert set(checks) <= listed, f"new {era} scenarios to classify: {sorted(set(checks) - listed)}"
    assert not set(baseline(era)["server"]) & MUST_PASS[era]


def test_fixture_passes_are_our_fixtures_answering(suite_run: tuple[str, int, str, dict[str, Any]]) -> None:
    """No fake pass: the fixture scenarios pass because the fixture ran, not on our "Unknown tool" answer."""
    era, _, _, checks = suite_run
    for scenario in ("tools-call-simple-text", "tools-call-error"):
        answer = json.dumps([c.get("details") for c in checks[scenario]])
        assert "Unknown tool" not in answer, f"{scenario} passed on a missing fixture:\n{answer}"
    assert "intentionally returns an error" in json.dumps(checks["tools-call-error"])
    assert "test://template/123/data" in json.dumps(checks["resources-templates-read"])
    if era == "2026-07-28":  # input-required results exist from 2026-07-28 on
        # capability-check passes on a real question: sampling asked, the guard's confirmation left out.
        by_id = {c["id"]: c for c in checks["input-required-result-capability-check"]}
        check = by_id["sep-2322-respect-client-capabilities"]
        asked = check["details"]["result"]["inputRequests"]
        assert [r["method"] for r in asked.values()] == ["sampling/createMessage"], asked
        assert "untestable" not in check["details"]


def test_dns_rebinding_refusal_is_a_4xx_from_our_gate(
    suite_run: tuple[str, int, str, dict[str, Any]],
) -> None:
    _, _, _, checks = suite_run
    by_id = {c["id"]: c for c in checks["dns-rebinding-protection"]}
    rejected = by_id["localhost-host-rebinding-rejected"]["details"]
    assert rejected["statusCode"] in (403, 421)
    assert rejected["body"]["error"] in ("invalid_host", "untrusted_origin", "invalid_origin")


@pytest.mark.anyio
async def test_completion_completes_tool_names(proxied: tuple[Server, str]) -> None:
    """The completion capability the suite checks does real work: it completes the prompt's tool argument.

    (logging/setLevel is checked by the suite at 2025-11-25; this client speaks 2026-07-28, which removed it.)
    """
    server, _ = proxied
    async with http_client(server.url, client_key(server.env)) as client:
        result = await client.complete(
            PromptReference(name="use_tools_safely"), {"name": "tool", "value": "who"}
        )
        prompt = await client.get_prompt("use_tools_safely", {"tool": "whoami"})
    assert result.completion.values == ["whoami"]
    assert "whoami" in prompt.messages[0].content.text  # type: ignore[union-attr]


def test_question_passes_are_our_fixtures_answering(suite_run: tuple[str, int, str, dict[str, Any]]) -> None:
    """s5d: each question scenario passed because our fixture asked and used the suite's answer."""
    era, _, _, checks = suite_run

    def result_of(scenario: str, check: str) -> str:
        return json.dumps(next(c for c in checks[scenario] if c["id"] == check)["details"])

    if era == "2026-07-28":
        assert "Hello, Alice!" in result_of(
            "input-required-result-basic-elicitation", "sep-2322-elicitation-complete"
        )
        assert "The capital of France is Paris." in result_of(
            "input-required-result-basic-sampling", "sep-2322-sampling-complete"
        )
        assert "file:///test/root" in result_of(
            "input-required-result-basic-list-roots", "sep-2322-list-roots-complete"
        )
        assert "state-ok" in result_of(
            "input-required-result-request-state", "sep-2322-request-state-complete"
        )
        assert "Alice likes blue" in result_of("input-required-result-multi-round", "sep-2322-multi-round-r3")
        assert "test context" in result_of(
            "input-required-result-non-tool-request", "sep-2322-non-tool-complete"
        )
        # Refused for the reason the expected-failures file gives: the unasked answer was asked again.
        ignored = result_of("input-required-result-ignore-extra-params", "sep-2322-ignore-unexpected-params")
        assert '"user_name"' in ignored and "input_required" in ignored, ignored
    else:
        assert "testuser" in result_of("tools-call-elicitation", "tools-call-elicitation")
        assert "This is a test response from the client" in result_of(
            "tools-call-sampling", "tools-call-sampling"
        )


# ---- s5e: content and JSON Schema 2020-12 fixtures -------------------------------------------------


def test_content_passes_went_through_the_guard(
    suite_run: tuple[str, int, str, dict[str, Any]], proxied: tuple[Server, str]
) -> None:
    """The content scenarios passed on our fixtures' answers, each one a guarded call in the audit trail."""
    _, _, _, checks = suite_run
    server, _ = proxied
    assert "Embedded resource content for testing." in json.dumps(checks["prompts-get-embedded-resource"])
    assert checks["tools-call-image"][0]["details"] == {"mimeType": "image/png", "hasData": True}
    admin = server.env["MCP_ADMIN_API_KEYS"].split(",")[0]
    trail = all_events(server, admin)
    called = {e["tool"] for e in trail if e["event"] == "tool_called"}
    assert {
        "test_image_content",
        "test_audio_content",
        "test_embedded_resource",
        "test_multiple_content_types",
    } <= called
    read = {e["tool"] for e in trail if e["event"] in ("resource_read", "prompt_retrieved")}
    assert {"static_binary", "test_prompt_with_embedded_resource", "test_prompt_with_image"} <= read


@pytest.mark.anyio
async def test_the_json_schema_rules_are_enforced(proxied: tuple[Server, str]) -> None:
    """What json_schema_2020_12_tool publishes (if contactMethod is phone then phone) the guard holds."""
    server, _ = proxied
    async with http_client(server.url, client_key(server.env)) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "json_schema_2020_12_tool")
        broken = await client.call_tool(
            "json_schema_2020_12_tool", {"contactMethod": "phone", "email": "a@b.c"}
        )
        kept = await client.call_tool("json_schema_2020_12_tool", {"contactMethod": "phone", "phone": "123"})
    assert tool.input_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert tool.input_schema["properties"]["phone"]["anyOf"][0]["maxLength"] == 200  # still bounded
    assert broken.is_error and "breaks the schema rule then/required" in text_of(broken)
    assert not kept.is_error, text_of(kept)


def test_notification_and_stream_passes_are_our_fixtures_answering(
    suite_run: tuple[str, int, str, dict[str, Any]],
) -> None:
    """No fake pass for s5f's scenarios: Notify sent the lines, the SDK checked our header, the guard
    refused."""
    era, _, _, checks = suite_run
    details = {c["id"]: c.get("details") or {} for scenario in checks.values() for c in scenario}
    assert details["tools-call-with-progress"]["progressCount"] == 3
    if era == "2025-11-25":
        assert [log["data"] for log in details["tools-call-with-logging"]["logs"]] == [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ]
        assert details["server-sse-disconnect-resume"]["receivedToolResponse"] is True
    else:
        refused = details["sep-2575-server-rejects-undeclared-capability"]["response"]["error"]
        assert refused["code"] == -32021 and refused["data"] == {"requiredCapabilities": {"sampling": {}}}
        assert "conformance_streams" not in refused["message"]  # no module path in the answer
        custom = [c for c in checks["http-custom-header-server-validation"] if c["id"] != "wire-schema-valid"]
        assert custom and all(c["details"].get("toolName") == "test_custom_header" for c in custom), custom


def test_task_passes_are_our_fixtures_answering(
    suite_run: tuple[str, int, str, dict[str, Any]], proxied: tuple[Server, str]
) -> None:
    """The tasks-* scenarios passed on tasks our guard created and ran (guard/tasks.py), each audited."""
    era, _, _, checks = suite_run
    if era != "2026-07-28":  # the extension exists from 2026-07-28 on
        return
    by_id = {c["id"]: c for scenario in checks.values() for c in scenario}
    assert by_id["sep-2663-tasks-get-status-completed"]["details"]["hasResult"] is True
    assert by_id["sep-2663-cancel-ack-empty-result"]["details"]["statusAfterCancel"] == "cancelled"
    assert by_id["tasks-extension-advertised"]["details"]["hasTasksExtension"] is True
    server, _ = proxied
    trail = all_events(server, server.env["MCP_ADMIN_API_KEYS"].split(",")[0])
    created = {e["tool"] for e in trail if e["event"] == "task_created"}
    assert {"slow_compute", "failing_job", "confirm_delete", "multi_input", "test_tool_with_task"} <= created
    ended = {e["details"].get("task_status") for e in trail if e["tool"] == "slow_compute"}
    assert {"completed", "cancelled"} <= ended, ended
