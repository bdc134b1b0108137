"""Least privilege that holds (issue 29, items 1 to 3), through the real client and a real server.

A credential with scopes reaches exactly the items whose scopes it holds, plus the items their author
declared `open_to_all=True` (whoami, about://server, use_tools_safely); every sample tool has a scope.
Lists and completions show a caller only what it may use, while the manifest lock stays whole. `admin`
is a kind of key, never a scope a tool key may carry: keygen, `check` and start-up refuse it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from mcp.types import PromptReference

from support import Server, Venv, clean_env, http_client, package_of, read_env_file, running_server, text_of
from support.perimeter import digest_of, security_events

pytestmark = pytest.mark.anyio

READER = "mcp_alice-reads-notes-only-0123456789"  # alice: notes:read
FULL = "mcp_full-access-key-no-scopes-0123456789"  # a key without scopes: every item
ADMIN = "mcp_admin-key-for-the-events-0123456789"
SNEAKY = "mcp_tool-key-claiming-admin-0123456789"  # mallory: a tool key with a scope named admin
OPEN = {"whoami"}
ALICE_TOOLS = ["list_notes", "whoami"]


def keys_env(project: Path, api_keys: str, **extra: str) -> dict[str, str]:
    return {
        **read_env_file(project),
        "MCP_API_KEYS": api_keys,
        "MCP_ADMIN_API_KEYS": digest_of(ADMIN),
        "MCP_SECURITY_EVENTS_URL": "memory://",
        "MCP_RATE_LIMIT": "10000/minute",
        "MCP_AUTH_FAILURE_THRESHOLD": "100000",
        **extra,
    }


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("http_all")


@pytest.fixture(scope="module")
def server(project: Path, venv: Venv) -> Iterator[Server]:
    api_keys = f"alice:{digest_of(READER)}:notes:read,{digest_of(FULL)}"
    with running_server(venv, project, keys_env(project, api_keys)) as running:
        yield running


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_scoped_key_reaches_only_its_scopes_and_the_open_items(server: Server, mode: str) -> None:
    async with http_client(server.url, READER, mode=mode) as client:
        # Tools that declared no scope before this change: a notes:read key ran each of them.
        for tool, arguments, scope in (
            ("run_python", {"code": "print(1)"}, "sandbox:run"),
            ("fetch_url", {"url": "https://example.com/"}, "web:read"),
            ("upstream_get", {"path": "/status"}, "upstream:read"),
            ("add_note", {"text": "not saved"}, "notes:write"),
        ):
            refused = await client.call_tool(tool, arguments)
            assert refused.is_error and f"Not allowed: {tool} needs scope {scope}." == text_of(refused)
        assert not (await client.call_tool("list_notes", {})).is_error
        whoami = await client.call_tool("whoami", {})  # open_to_all: every authenticated caller
        assert text_of(whoami) == "principal: alice\nscopes: notes:read"
        assert (await client.read_resource("about://server")).contents  # open_to_all too
    denied = [e for e in security_events(server) if e["event"] == "authorization_denied"]
    assert {e["tool"] for e in denied if e["identifier"] == "alice"} >= {
        "run_python",
        "fetch_url",
        "upstream_get",
    }


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_lists_and_completions_show_a_caller_only_what_it_may_use(
    server: Server, project: Path, mode: str
) -> None:
    async with http_client(server.url, READER, mode=mode) as client:
        tools = (await client.list_tools()).tools
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = (await client.list_resource_templates()).resource_templates
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        completed = await client.complete(
            PromptReference(name="use_tools_safely"), {"name": "tool", "value": ""}
        )
    assert sorted(tool.name for tool in tools) == ALICE_TOOLS
    assert "run_python" not in json.dumps([tool.model_dump(mode="json") for tool in tools])
    assert resources == ["about://server"]
    assert templates == []  # records:// and the like need records:read
    assert prompts == ["use_tools_safely"]
    assert sorted(completed.completion.values) == ALICE_TOOLS
    # A key without scopes sees everything; the manifest lock lists everything whatever the caller.
    lock = json.loads((project / "tools.lock.json").read_text())
    async with http_client(server.url, FULL, mode=mode) as client:
        everything = sorted(tool.name for tool in (await client.list_tools()).tools)
        completed = await client.complete(
            PromptReference(name="use_tools_safely"), {"name": "tool", "value": ""}
        )
    assert everything == sorted(lock["tools"]) and len(everything) > len(ALICE_TOOLS)
    assert sorted(completed.completion.values) == everything
    assert lock["tools"]["whoami"]["open_to_all"] is True and "open_to_all" not in lock["tools"]["run_python"]


def test_every_sample_tool_declares_a_scope_or_is_open(project: Path) -> None:
    lock = json.loads((project / "tools.lock.json").read_text())
    for section, items in lock.items():
        for name, item in items.items():
            assert item["scopes"] or item.get("open_to_all"), f"{section} {name} declares no scope"
    assert {name for name, item in lock["tools"].items() if item.get("open_to_all")} == OPEN


def run_cli(
    venv: Venv, project: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    command, _ = package_of(project)
    try:
        return subprocess.run(
            [venv.bin(command), *args],
            cwd=project,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)} was still running after {timeout} s")


def test_check_lists_what_each_key_reaches(project: Path, venv: Venv) -> None:
    env = keys_env(project, f"alice:{digest_of(READER)}:notes:read,{digest_of(FULL)}")
    result = run_cli(venv, project, "check", "--offline", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "ok       MCP_API_KEYS key alice reaches: prompts use_tools_safely; resources about://server; "
        "tools list_notes, whoami"
    ) in result.stdout, result.stdout
    full = digest_of(FULL).removeprefix("sha256:")[:12]
    line = next(line for line in result.stdout.splitlines() if f"key key:{full} reaches:" in line)
    assert "run_python" in line and "fetch_url" in line and "upstream_get" in line


def test_admin_is_not_a_scope_a_tool_key_may_carry(project: Path, venv: Venv) -> None:
    keygen = run_cli(venv, project, "keygen", "--name", "mallory", "--scopes", "notes:read,admin", env={})
    assert keygen.returncode == 2 and "'admin' is not a scope" in keygen.stderr, keygen.stdout + keygen.stderr
    assert "key:" not in keygen.stdout
    env = keys_env(project, f"mallory:{digest_of(SNEAKY)}:admin")
    check = run_cli(venv, project, "check", "--offline", env=env)
    assert check.returncode == 1
    assert "ERROR    MCP_API_KEYS entry 1 (mallory): 'admin' is not a scope" in check.stdout, check.stdout
    # Start-up refuses it too: before, this key read /security/events and /metrics.
    serve = run_cli(venv, project, "serve", "--transport", "http", "--port", "0", env=env, timeout=30)
    assert serve.returncode != 0 and "'admin' is not a scope" in serve.stderr, serve.stderr


def test_an_admin_key_still_reads_the_events_and_a_tool_key_does_not(server: Server) -> None:
    def events(key: str) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx2.get(server.base + "/security/events", headers=headers, timeout=10).status_code

    assert (events(ADMIN), events(FULL), events(READER)) == (200, 403, 403)


def test_an_oauth_readme_speaks_of_tokens_only(rendered: Callable[[str], Path]) -> None:
    # Issue 29, item 5: no tool keys, team keys or keygen --name in an auth=oauth project's README.
    readme = (rendered("oauth") / "README.md").read_text()
    assert "MCP_API_KEYS" not in readme and "keygen --name" not in readme
    assert "keygen --admin" in readme  # the admin key is still an API key
    api_key_readme = (rendered("http_all") / "README.md").read_text()
    assert "keygen --name alice" in api_key_readme and "open_to_all=True" in api_key_readme


# ---- item 6: the copy writes a named key, so a rotation keeps the caller and its data ----------------


async def test_the_copy_writes_a_named_key_that_survives_rotation(project: Path, venv: Venv) -> None:
    env = read_env_file(project)  # written by the copy task; the answers' author is "Test"
    name, _, key = env["MCP_API_KEYS"].partition(":")
    assert name == "test" and key.startswith("mcp_"), env["MCP_API_KEYS"]
    rotated = run_cli(venv, project, "keygen", "--name", name, env={})
    assert rotated.returncode == 0, rotated.stderr
    fields = dict(
        line.split(":", 1) for line in rotated.stdout.splitlines() if line.startswith(("key:", "digest:"))
    )
    new_key, new_line = fields["key"].strip(), fields["digest"].strip()
    both = keys_env(project, f"{env['MCP_API_KEYS']},{new_line}")
    with running_server(venv, project, both) as server:
        async with http_client(server.url, key) as client:
            assert text_of(await client.call_tool("whoami", {})).startswith("principal: test\n")
            await client.call_tool("add_note", {"text": "kept across the rotation"})
        async with http_client(server.url, new_key) as client:
            assert text_of(await client.call_tool("whoami", {})).startswith("principal: test\n")
            assert "kept across the rotation" in text_of(await client.call_tool("list_notes", {}))


def test_keygen_write_env_names_the_key_after_the_user(project: Path, venv: Venv, tmp_path: Path) -> None:
    copy = tmp_path / "project"
    copy.mkdir()
    (copy / "pyproject.toml").write_text((project / "pyproject.toml").read_text())
    command, _ = package_of(project)
    result = venv.run(venv.bin(command), "keygen", "--write-env", cwd=copy, env={"USER": "Zoë O'Brien"})
    assert result.returncode == 0, result.stderr
    assert read_env_file(copy)["MCP_API_KEYS"].startswith("zoe-o-brien:mcp_")
