"""Cedar policies, through the rendered README: a rule limits read_file to reports/ for one key (issue 25).

The rendered project's own tests cover the engine in-process (tests/test_policies.py there); here the real
server runs over HTTP and stdio and is called by the real MCP client with real API keys.
"""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from support import Venv, http_client, package_of, running_server, stdio_params, text_of, wait_for

ALICE_KEY = "mcp_alice-policy-key-0123456789"
BOB_KEY = "mcp_bob-policy-key-0123456789abc"
ADMIN_KEY = "mcp_admin-policy-key-0123456789a"


def _digest(key: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _readme_rule(project: Path) -> str:
    """The rule the rendered README tells the user to write, as it is printed there."""
    readme = (project / "README.md").read_text()
    blocks = re.findall(r"```text\n(.*?)```", readme, re.DOTALL)
    rule = next(b for b in blocks if 'Mcp::Action::"read_file"' in b and "reports/" in b)
    assert "policies/reports.cedar" in readme
    return rule


def _copy(original: Path, tmp_path: Path) -> Path:
    """A copy of a rendered project (the venv runs the original's code; policies are read from the copy)."""
    copy = tmp_path / "project"
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns(".venv", "*.db*", "data"))
    return copy


@pytest.fixture
def project(rendered, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    return _copy(rendered("http_all"), tmp_path)


def _env(project: Path) -> dict[str, str]:
    files = project / "files"
    (files / "reports").mkdir(parents=True, exist_ok=True)
    (files / "reports" / "q3.txt").write_text("Q3 revenue up")
    (files / "secret.txt").write_text("not for alice")
    return {
        "MCP_API_KEYS": f"alice[analysts]:{_digest(ALICE_KEY)},bob:{_digest(BOB_KEY)}",
        "MCP_ADMIN_API_KEYS": ADMIN_KEY,
        "MCP_FILES_ROOT": str(files),
        "MCP_DATA_DIR": str(project / "data"),
        "MCP_SECURITY_EVENTS_URL": f"sqlite:///{project / 'events.db'}",
    }


@pytest.mark.anyio
async def test_the_readme_rule_limits_read_file_to_reports_for_one_key(venv: Venv, project: Path) -> None:
    command, _ = package_of(project)
    env = _env(project)
    (project / "policies" / "reports.cedar").write_text(_readme_rule(project))
    checked = venv.run(venv.bin(command), "check", "--offline", cwd=project, env=env)
    assert "policy alice-reports-only (policies/reports.cedar:1): forbid on read_file" in checked.stdout

    with running_server(venv, project, env) as server:
        async with http_client(server.url, ALICE_KEY) as alice:
            inside = await alice.call_tool("read_file", {"path": "reports/q3.txt"})
            outside = await alice.call_tool("read_file", {"path": "secret.txt"})
        async with http_client(server.url, BOB_KEY) as bob:
            bobs = await bob.call_tool("read_file", {"path": "secret.txt"})
        events = httpx2.get(
            server.base + "/security/events",
            params={"event": "authorization_denied"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ).json()["events"]
    assert not inside.is_error and "Q3 revenue up" in text_of(inside)
    assert outside.is_error and "policies refuse read_file" in text_of(outside)
    assert "alice-reports-only" not in text_of(outside)
    assert not bobs.is_error and "not for alice" in text_of(bobs)
    assert [(e["identifier"], e["tool"], e["details"]["policies"]) for e in events] == [
        ("alice", "read_file", ["alice-reports-only"])
    ]
    assert "secret.txt" not in str(events)

    # A typo stops check, naming the file and line.
    (project / "policies" / "reports.cedar").write_text(
        _readme_rule(project).replace("context.input.path", "context.input.pth")
    )
    typo = venv.run(venv.bin(command), "check", "--offline", cwd=project, env=env)
    assert typo.returncode != 0
    assert "policies/reports.cedar:3:" in typo.stdout + typo.stderr


def test_serve_refuses_to_start_on_a_bad_policy(venv: Venv, project: Path) -> None:
    command, _ = package_of(project)
    (project / "policies" / "bad.cedar").write_text(
        "permit (principal, action, resource);\nforbid (principal, acton, resource);\n"
    )
    result = venv.run(
        venv.bin(command), "serve", "--transport", "http", cwd=project, env=_env(project), timeout=60
    )
    assert result.returncode == 2
    assert "policies/bad.cedar:2: found an invalid variable in the policy scope: acton" in result.stderr


@pytest.mark.anyio
async def test_sighup_reloads_and_a_bad_set_keeps_the_running_one(venv: Venv, project: Path) -> None:
    env = _env(project)
    rules = project / "policies" / "reports.cedar"
    with running_server(venv, project, env) as server:
        async with http_client(server.url, ALICE_KEY) as alice:
            assert not (await alice.call_tool("read_file", {"path": "secret.txt"})).is_error
            rules.write_text(_readme_rule(project))
            server.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "policies reloaded" in server.log(), what="the reload")
            assert (await alice.call_tool("read_file", {"path": "secret.txt"})).is_error
            rules.write_text("forbid (principal, action, resource) when { nonsense };\n")
            server.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "policies not reloaded" in server.log(), what="the refused reload")
            assert (await alice.call_tool("read_file", {"path": "secret.txt"})).is_error  # still the rule
            assert not (await alice.call_tool("read_file", {"path": "reports/q3.txt"})).is_error
        failed = httpx2.get(
            server.base + "/security/events",
            params={"event": "policy_reload_failed"},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ).json()["events"]
    assert [e["severity"] for e in failed] == ["high"]


@pytest.mark.anyio
async def test_a_policy_applies_over_stdio(venv: Venv, rendered, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = _copy(rendered("stdio"), tmp_path)
    (project / "policies" / "stdio.cedar").write_text(
        '@id("no-secrets-on-stdio")\nforbid (principal, action == Mcp::Action::"read_file", resource)\n'
        'when { principal.kind == "stdio" && context.transport == "stdio" }\n'
        'unless { context.input.path like "reports/*" };\n'
    )
    env = {**_env(project), "MCP_SECURITY_EVENTS_URL": "memory://"}
    async with Client(stdio_params(venv, project, env)) as client:
        assert (await client.call_tool("read_file", {"path": "secret.txt"})).is_error
        assert not (await client.call_tool("read_file", {"path": "reports/q3.txt"})).is_error


# ---- the example rules, through the real client ---------------------------------------------

EXAMPLES = """
@id("ci-read-only")
forbid (principal == Mcp::Principal::"key:ci", action, resource)
unless { action in Mcp::Action::"read_only" };

@id("destructive-from-office-only")
forbid (principal, action in Mcp::Action::"destructive", resource)
unless { context.transport == "stdio" || context.client_address.isInRange(ip("10.0.0.0/8")) };

@id("notes-page-size")
forbid (principal, action == Mcp::Action::"list_notes", resource)
when { context.input has limit && context.input.limit > 50 };

@id("analysts-read-reports-only")
forbid (principal, action == Mcp::Action::"read_file", resource)
when { principal.groups.contains("analysts") }
unless { context.input.path like "reports/*" };
"""
CI_KEY = "mcp_ci-policy-key-0123456789abcdef"
HOSTILE_PATHS = [
    'secret.txt" || true || "',
    'reports/*"; permit (principal, action, resource); //',
    "secret.txt\u202ereports/",
    "\uff52eports/q3.txt",  # a fullwidth r
    "secret.txt\nreports/q3.txt",
    "\\u0072eports/q3.txt",
    "*",
    "reports",
    "x" * 1_000,
    "x" * 100_000,
]


async def _call(server_url: str, token: str, address: str, tool: str, arguments: dict[str, object]) -> str:
    """One call from `address` (the server trusts 127.0.0.1 as its proxy, so X-Forwarded-For counts)."""
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": address}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(server_url, http_client=http)) as client,
    ):
        result = await client.call_tool(tool, arguments)
    return ("refused: " if result.is_error else "ok: ") + text_of(result)


@pytest.mark.anyio
async def test_the_example_rules_with_api_keys_and_groups(venv: Venv, project: Path) -> None:
    env = {
        **_env(project),
        "MCP_API_KEYS": f"alice[analysts]:{_digest(ALICE_KEY)},bob:{_digest(BOB_KEY)},ci:{_digest(CI_KEY)}",
        "MCP_TRUSTED_PROXIES": "127.0.0.1",
    }
    (project / "policies" / "examples.cedar").write_text(EXAMPLES)
    office, outside = "10.1.2.3", "203.0.113.7"
    with running_server(venv, project, env) as server:
        url = server.url
        # The key named ci: read-only tools only.
        assert (await _call(url, CI_KEY, office, "list_files", {})).startswith("ok")
        assert "policies refuse add_note" in await _call(url, CI_KEY, office, "add_note", {"text": "hi"})
        assert (await _call(url, BOB_KEY, office, "add_note", {"text": "hi"})).startswith("ok")
        # No destructive tool from outside the office network (delete_note is destructive).
        assert "policies refuse delete_note" in await _call(
            url, BOB_KEY, outside, "delete_note", {"note_id": 1}
        )
        assert "policies refuse" not in await _call(url, BOB_KEY, office, "delete_note", {"note_id": 1})
        # Arguments as validated: a limit over 50 is refused, the default (20) is not.
        assert "policies refuse list_notes" in await _call(url, BOB_KEY, office, "list_notes", {"limit": 60})
        assert (await _call(url, BOB_KEY, office, "list_notes", {})).startswith("ok")
        # Analysts (alice's key is in the group) read reports/ only; bob is not an analyst.
        assert (await _call(url, ALICE_KEY, outside, "read_file", {"path": "reports/q3.txt"})).startswith(
            "ok"
        )
        assert (await _call(url, BOB_KEY, outside, "read_file", {"path": "secret.txt"})).startswith("ok")
        for path in HOSTILE_PATHS:
            assert (await _call(url, ALICE_KEY, outside, "read_file", {"path": path})).startswith("refused")
        denied, invalid = (
            httpx2.get(
                server.base + "/security/events",
                params={"event": event, "limit": 500},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            ).json()["events"]
            for event in ("authorization_denied", "input_validation_failed")
        )
    by_policy = [(e["identifier"], tuple(e["details"].get("policies", ()))) for e in denied]
    assert ("ci", ("ci-read-only",)) in by_policy
    assert ("bob", ("destructive-from-office-only",)) in by_policy
    # Every hostile path was refused: by argument validation (too long, control characters), else by the
    # analysts' rule, which no path outside reports/ escaped.
    refused_by_validation = sum(1 for e in invalid if e["identifier"] == "alice")
    assert 1 <= refused_by_validation <= 3
    by_rule = by_policy.count(("alice", ("analysts-read-reports-only",)))
    assert by_rule + refused_by_validation == len(HOSTILE_PATHS)
    assert "secret.txt" not in str(denied) and "permit (principal" not in str(denied)


@pytest.mark.anyio
async def test_oauth_groups_claim_and_clients_acting_for_themselves(
    venv: Venv,
    rendered,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from support import free_port, post_mcp, read_env_file, start_server
    from support.oauth_server import AuthServer

    project = _copy(rendered("oauth"), tmp_path)
    (project / "policies" / "oauth.cedar").write_text(
        '@id("no-writes-for-bare-clients")\n'
        'forbid (principal, action == Mcp::Action::"add_note", resource)\n'
        'when { principal.kind == "client" };\n'
        '@id("readers-only")\n'
        'forbid (principal, action == Mcp::Action::"list_notes", resource)\n'
        'unless { principal.groups.contains("readers") };\n'
    )
    scope = "mcp:tools notes:read notes:write"
    with AuthServer() as auth:
        port = free_port()
        env = {
            **read_env_file(project),
            **auth.settings(f"http://127.0.0.1:{port}/mcp"),
            "MCP_OAUTH_GROUPS_CLAIM": "roles",
            "MCP_SECURITY_EVENTS_URL": "memory://",
            "MCP_DATA_DIR": str(tmp_path / "data"),
        }
        server = start_server(venv, project, env, port=port)
        try:
            bare = auth.mint(
                server.url, scope=scope, roles=["readers"]
            )  # sub == client_id: client:test-client
            reader = auth.mint(server.url, scope=scope, sub="ada", roles=["readers"])
            other = auth.mint(server.url, scope=scope, sub="bob", groups=["readers"])  # not the claim named
            async with http_client(server.url, bare) as client:
                assert (await client.call_tool("add_note", {"text": "x"})).is_error
                assert not (await client.call_tool("list_notes", {})).is_error
            async with http_client(server.url, reader) as client:
                assert not (await client.call_tool("add_note", {"text": "x"})).is_error
                assert not (await client.call_tool("list_notes", {})).is_error
            async with http_client(server.url, other) as client:
                refused = await client.call_tool("list_notes", {})
            assert refused.is_error and "policies refuse list_notes" in text_of(refused)
            # A policy denial is not a scope problem: no 403 step-up, an error result in a 200.
            call = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "add_note", "arguments": {"text": "y"}},
            }
            raw = post_mcp(server, call, bare)
            assert raw.status_code == 200 and "www-authenticate" not in raw.headers
            assert '"isError":true' in raw.text
        finally:
            server.stop()
