"""The official MCP conformance suite (npm @modelcontextprotocol/conformance) judges a rendered HTTP server.

The suite cannot send an Authorization header, so it talks to a header-adding reverse proxy
(tests/support/proxy.py, test code only) in front of the real server. The server is configured as it
would be behind that address: the proxy's origin is the one trusted browser origin, and the per-client
rate limit is raised above the suite's request count (every request comes from the proxy's address).
Fixture-dependent scenarios are listed, with reasons, in tests/conformance-expected-failures.yml.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp.types import PromptReference

from support import TEMPLATE_ROOT, Server, Venv, free_port, http_client, read_env_file, running_server
from support.node import run_node_tool
from support.proxy import running_proxy

BASELINE = TEMPLATE_ROOT / "tests" / "conformance-expected-failures.yml"
# Scenarios whose pass here is real: each must report at least one check and all of them SUCCESS.
MUST_PASS = {
    "server-initialize",
    "ping",
    "logging-set-level",
    "tools-list",
    "resources-list",
    "prompts-list",
    "dns-rebinding-protection",
}


@pytest.fixture(scope="module")
def proxied(rendered: Callable[[str], Path], venv: Venv, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Server, str]]:
    project = rendered("both")
    env = read_env_file(project)
    proxy_port = free_port()
    proxy_origin = f"http://127.0.0.1:{proxy_port}"
    env.update(MCP_TRUSTED_ORIGINS=proxy_origin, MCP_RATE_LIMIT="100000/minute")
    logs = tmp_path_factory.mktemp("conformance-logs")
    with running_server(venv, project, env, log_dir=logs) as server:
        auth = {"Authorization": f"Bearer {env['MCP_API_KEYS']}"}
        with running_proxy(proxy_port, server.base, auth, logs / "proxy.log") as proxy_base:
            yield server, proxy_base + "/mcp"


@pytest.fixture(scope="module")
def suite_run(proxied: tuple[Server, str], tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[int, str, dict[str, list[dict[str, Any]]]]:
    """One run of the whole active server suite: (exit code, output, checks by scenario)."""
    server, url = proxied
    out = tmp_path_factory.mktemp("conformance")
    result = run_node_tool(
        "conformance", "server", "--url", url, "--expected-failures", str(BASELINE), "-o", str(out), cwd=out
    )
    checks: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("server-*/checks.json")):
        scenario = path.parent.name.removeprefix("server-").rsplit("-", 6)[0]
        checks[scenario] = json.loads(path.read_text())
    output = result.stdout + result.stderr + "\n--- server log ---\n" + server.log()[-4000:]
    return result.returncode, output, checks


def baseline() -> dict[str, list[str]]:
    data: dict[str, list[str]] = yaml.safe_load(BASELINE.read_text())
    return data


def failed(checks: list[dict[str, Any]]) -> list[str]:
    return [f"{c['id']}: {c['status']} {c.get('errorMessage') or ''}" for c in checks if c["status"] != "SUCCESS"]


def test_suite_passes_against_the_baseline(suite_run: tuple[int, str, dict[str, Any]]) -> None:
    """The suite's own verdict: no unexpected failure, and no listed failure that now passes."""
    code, output, checks = suite_run
    assert checks, f"the suite wrote no results:\n{output}"
    assert code == 0, output


@pytest.mark.parametrize("scenario", sorted(MUST_PASS))
def test_scenario_passes_for_real(suite_run: tuple[int, str, dict[str, Any]], scenario: str) -> None:
    _, output, checks = suite_run
    assert scenario in checks, f"{scenario} did not run:\n{output}"
    assert checks[scenario], f"{scenario} ran no check"
    assert not failed(checks[scenario]), failed(checks[scenario])


def test_every_scenario_is_accounted_for(suite_run: tuple[int, str, dict[str, Any]]) -> None:
    """A scenario the suite adds in a new version must land in one list or another, with a reason."""
    _, _, checks = suite_run
    listed = MUST_PASS | set(baseline()["server"]) | set(baseline()["passes_without_fixture"])
    assert set(checks) <= listed, f"new scenarios to classify: {sorted(set(checks) - listed)}"
    assert not set(baseline()["server"]) & MUST_PASS


@pytest.mark.parametrize("scenario", baseline()["passes_without_fixture"])
def test_fixture_scenarios_that_pass_do_so_only_on_our_unknown_tool_answer(
    suite_run: tuple[int, str, dict[str, Any]], scenario: str
) -> None:
    """These report SUCCESS although the fixture tool is missing: check that this is still why."""
    _, _, checks = suite_run
    assert not failed(checks[scenario])
    answer = json.dumps([c.get("details") for c in checks[scenario]])
    assert "Unknown tool" in answer, f"{scenario} now passes for another reason: move it to MUST_PASS\n{answer}"


def test_dns_rebinding_refusal_is_a_4xx_from_our_gate(suite_run: tuple[int, str, dict[str, Any]]) -> None:
    _, _, checks = suite_run
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
    async with http_client(server.url, server.env["MCP_API_KEYS"]) as client:
        result = await client.complete(PromptReference(name="use_tools_safely"), {"name": "tool", "value": "who"})
        prompt = await client.get_prompt("use_tools_safely", {"tool": "whoami"})
    assert result.completion.values == ["whoami"]
    assert "whoami" in prompt.messages[0].content.text  # type: ignore[union-attr]
