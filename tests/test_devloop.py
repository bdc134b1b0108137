"""The developer's loop (issue 26, items 1 to 3), each command as a user runs it in a real render:
`dev` picks up a new tool module and a new key without being restarted, seen through the real MCP
client; `install` writes each client's file where the client reads it, keeps what was there, and a
second run changes nothing (Claude Code's file is read back by the same stand-in the README tests use,
support/claude_code.py, whose `claude mcp list` connects to each server as Claude Code does); `keys`
adds, lists, rotates with a grace and revokes, with calls from the real client at each step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from support import (
    BASE,
    TEMPLATE_ROOT,
    Venv,
    claude_code,
    clean_env,
    free_port,
    http_client,
    package_of,
    read_env_file,
    render,
    running_server,
    stop_process,
    text_of,
    wait_for,
)
from support.tooling import add_tool_module

ANSWERS = {
    **BASE,
    "project_name": "Acme Devloop",
    "transport": "both",
    "auth": "api_key",
    "sample_tools": ["notes"],
}
SHOUT = '''
from typing import Annotated

from pydantic import Field

from ..security.guard import Guard
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True)
    async def shout(text: Annotated[str, Field(max_length=100)]) -> str:
        """Repeat text loudly."""
        return text.upper()
'''


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = render(ANSWERS, tmp_path_factory.mktemp("devloop") / "project")
    venv.install(project)
    return project


def cli(
    venv: Venv, project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command, _ = package_of(project)
    return venv.run(venv.bin(command), *args, cwd=project, env=env, timeout=180)


def copy_key(project: Path) -> str:
    """The tool key the copy wrote: the part of its `<name>:mcp_...` entry a client sends."""
    entry = read_env_file(project)["MCP_API_KEYS"].split(",")[0]
    return entry.split(":", 1)[1] if ":mcp_" in entry else entry


def tools_and_whoami(url: str, key: str) -> tuple[set[str], str]:
    async def ask() -> tuple[set[str], str]:
        async with http_client(url, key) as client:
            listed = {tool.name for tool in (await client.list_tools()).tools}
            return listed, text_of(await client.call_tool("whoami", {}))

    return anyio.run(ask)


def add_note_refusal(url: str, key: str) -> str:
    async def ask() -> str:
        async with http_client(url, key) as client:
            result = await client.call_tool("add_note", {"text": "hello"})
            assert result.is_error
            return text_of(result)

    return anyio.run(ask)


def refused_or_down(url: str, key: str) -> str:
    try:
        return "refused" if refused(url, key) else "accepted"
    except httpx2.HTTPError:
        return "down"


def refused(url: str, key: str) -> bool:
    response = httpx2.post(url, headers={"Authorization": f"Bearer {key}"}, json={}, timeout=30)
    return response.status_code == 401


def answering(url: str, key: str) -> Iterator[tuple[set[str], str] | None]:
    """What the server answers, or None while it restarts."""
    while True:
        try:
            yield tools_and_whoami(url, key)
        except Exception:  # noqa: BLE001 - a restart in progress: connection refused, reset, 401...
            yield None


# --- dev -----------------------------------------------------------------------------------------


@pytest.fixture
def dev(venv: Venv, project: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    command, _ = package_of(project)
    port = free_port()
    log = tmp_path / "dev.log"
    # MCP_HOST in the environment asks for every address: dev serves loopback all the same.
    # No Node on PATH (no directory at all): --inspector says so and dev serves without it.
    env = clean_env({"MCP_HOST": "0.0.0.0", "HOME": str(tmp_path), "PATH": str(tmp_path / "no-bin")})  # noqa: S104
    with log.open("wb") as out:
        process = subprocess.Popen(
            [venv.bin(command), "dev", "--port", str(port), "--inspector"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, port, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal: the group, as a terminal sends it
        stop_process(process, signal.SIGINT, timeout=60)


def test_dev_serves_a_new_tool_module_and_a_new_key_without_a_restart(
    dev: tuple[subprocess.Popen[bytes], int, Path], project: Path, venv: Venv
) -> None:
    process, port, log = dev
    url = f"http://127.0.0.1:{port}/mcp"
    key = copy_key(project)
    first = wait_for(lambda: next(answering(url, key)), timeout=120, what="dev to serve")
    assert "shout" not in first[0] and "whoami" in first[0]
    text = log.read_text()
    assert f"Uvicorn running on http://127.0.0.1:{port}" in text  # loopback, whatever MCP_HOST says
    inspector = json.loads(
        (TEMPLATE_ROOT / "node_modules/@modelcontextprotocol/inspector/package.json").read_text()
    )
    # The Inspector the template's tests run, pinned.
    assert (
        f"npx -y @modelcontextprotocol/inspector@{inspector['version']} --transport http --server-url {url}"
        in text
    )
    assert "npx (Node 22+) is not on PATH; serving without the Inspector" in text  # --inspector, no Node
    module = add_tool_module(project, "shout", SHOUT)
    try:
        wait_for(lambda: "changed; restarting" in log.read_text(), timeout=60, what="dev to see the module")
        found = wait_for(
            lambda: (answer := next(answering(url, key))) and "shout" in answer[0] and answer,
            timeout=120,
            what="dev to serve the new tool:\n" + log.read_text(),
        )
        assert "shout" in found[0]
        text = log.read_text()
        assert "tools/shout.py changed; restarting" in text
        assert (
            "WARNING  tool shout is served but not in the lock" in text and "check --update-lock" in text
        ), text  # warned ...
        assert process.poll() is None  # ... and still serving
        # A key added to .env while dev runs works at once: dev restarts on .env too.
        added = cli(venv, project, "keys", "add", "carol")
        assert added.returncode == 0, added.stderr
        carol = re.search(r"^key: (\S+)$", added.stdout, re.M).group(1)  # type: ignore[union-attr]
        answer = wait_for(lambda: next(answering(url, carol)), timeout=120, what="carol's key to work")
        assert "principal: carol" in answer[1]
    finally:
        module.unlink()
        cli(venv, project, "keys", "revoke", "carol")
    # Once the revocation has restarted it, Ctrl-C: the served process shuts down gracefully, once,
    # and dev ends as serve does.
    wait_for(lambda: refused_or_down(url, carol) == "refused", timeout=120, what="carol's key to go")
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 130
    text = log.read_text()
    assert "Traceback" not in text, text
    assert text.count("Application shutdown complete") >= 4, text  # 3 restarts (or more) and the stop


def test_dev_in_a_stdio_project_says_what_to_do(rendered: object, venv: Venv) -> None:
    project = rendered("stdio")  # type: ignore[operator]
    result = cli(venv, project, "dev")
    assert result.returncode == 2
    assert "generated for stdio only" in result.stderr and "transport=both" in result.stderr
    assert "Traceback" not in result.stderr


# --- install -------------------------------------------------------------------------------------

CLIENT_FILES = {
    "claude-desktop": (".config/Claude/claude_desktop_config.json", "mcpServers"),
    "claude-code": (".claude.json", "mcpServers"),
    "cursor": (".cursor/mcp.json", "mcpServers"),
    "vscode": (".config/Code/User/mcp.json", "servers"),
}


def test_install_writes_each_clients_file_once_and_keeps_the_rest(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    command, _ = package_of(project)
    home = tmp_path / "home"
    bin_dir = home / "bin"
    claude = str(claude_code.install(bin_dir))
    uv = shutil.which("uv")
    assert uv
    env = {
        "HOME": str(home),
        "PATH": f"{bin_dir}:{Path(uv).parent}:/usr/bin:/bin",
        "UV_CACHE_DIR": subprocess.run([uv, "cache", "dir"], capture_output=True, text=True).stdout.strip(),
    }
    env.pop("XDG_CONFIG_HOME", None)
    # Cursor's file holds another server and a setting of its own already.
    cursor = home / ".cursor/mcp.json"
    cursor.parent.mkdir(parents=True)
    before = {"mcpServers": {"other": {"command": "other-server"}}, "theme": "dark"}
    cursor.write_text(json.dumps(before))
    for client, (where, section) in CLIENT_FILES.items():
        result = cli(venv, project, "install", client, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        path = home / where
        entry = json.loads(path.read_text())[section][command]
        assert entry["command"] == str(Path(uv).resolve())  # absolute: desktop clients lack the shell's PATH
        assert entry["args"] == ["--directory", str(project), "run", command, "serve", "--transport", "stdio"]
        assert f"added {command}" in result.stdout
        first = path.read_bytes()
        again = cli(venv, project, "install", client, env=env)
        assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr
        assert path.read_bytes() == first
    config = json.loads(cursor.read_text())
    assert config["theme"] == "dark" and config["mcpServers"]["other"] == before["mcpServers"]["other"]
    assert [json.loads(b.read_text()) for b in cursor.parent.glob("mcp.json.*.bak")] == [before]
    assert not list((home / ".config/Code/User").glob("*.bak"))  # a new file: nothing to back up
    # Claude Code reads its file and starts the server from it (the README tests' stand-in).
    listed = subprocess.run(
        [claude, "mcp", "list"],
        env=clean_env(env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert listed.returncode == 0 and f"{command}: " in listed.stdout and "whoami" in listed.stdout, (
        listed.stdout + listed.stderr
    )


def test_install_over_http_reads_the_key_from_the_environment(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    command, _ = package_of(project)
    home = tmp_path / "home"
    claude = str(claude_code.install(home / "bin"))
    variable = command.upper().replace("-", "_") + "_KEY"
    key = copy_key(project)
    with running_server(venv, project, {}, log_dir=tmp_path) as server:
        env = {"HOME": str(home), "PATH": f"{home / 'bin'}:/usr/bin:/bin"}
        for client in ("claude-code", "cursor", "vscode"):
            result = cli(
                venv, project, "install", client, "--transport", "http", "--url", server.url, env=env
            )
            assert result.returncode == 0, result.stdout + result.stderr
            assert key not in (home / CLIENT_FILES[client][0]).read_text()  # the key never lands in the file
        cursor = json.loads((home / ".cursor/mcp.json").read_text())["mcpServers"][f"{command}-http"]
        assert cursor == {"url": server.url, "headers": {"Authorization": f"Bearer ${{env:{variable}}}"}}
        vscode = json.loads((home / CLIENT_FILES["vscode"][0]).read_text())
        assert vscode["servers"][f"{command}-http"]["headers"] == {
            "Authorization": f"Bearer ${{input:{command}-key}}"
        }
        assert vscode["inputs"] == [
            {
                "type": "promptString",
                "id": f"{command}-key",
                "description": "Acme Devloop API key",
                "password": True,
            }
        ]
        listed = subprocess.run(
            [claude, "mcp", "list"],
            env=clean_env({**env, variable: key}),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0 and "whoami" in listed.stdout, listed.stdout + listed.stderr
    refused_desktop = cli(venv, project, "install", "claude-desktop", "--transport", "http", env=env)
    assert refused_desktop.returncode == 2 and "Connectors" in refused_desktop.stderr
    # --config names another file (Cursor's project-level one); a file with comments is left alone.
    local = tmp_path / "workspace/.cursor/mcp.json"
    result = cli(venv, project, "install", "cursor", "--transport", "http", "--config", str(local), env=env)
    assert result.returncode == 0, result.stderr
    assert f"{command}-http" in json.loads(local.read_text())["mcpServers"]
    commented = tmp_path / "workspace/.vscode/mcp.json"
    commented.parent.mkdir(parents=True)
    commented.write_text('// mine\n{"servers": {}}\n')
    result = cli(
        venv, project, "install", "vscode", "--transport", "http", "--config", str(commented), env=env
    )
    assert result.returncode == 2 and "not plain JSON" in result.stderr and "Traceback" not in result.stderr
    assert commented.read_text() == '// mine\n{"servers": {}}\n'


# --- keys ----------------------------------------------------------------------------------------


def test_keys_round_trip(project: Path, venv: Venv, tmp_path: Path) -> None:
    dotenv = project / ".env"
    saved = dotenv.read_text()
    dotenv.write_text("# my own comment\n" + saved + "MCP_LOG_LEVEL=INFO  # and a trailing one\n")
    original = dotenv.read_text()
    try:
        added = cli(venv, project, "keys", "add", "alice", "--scopes", "notes:read")
        assert added.returncode == 0, added.stderr
        alice = re.search(r"^key: (\S+)$", added.stdout, re.M).group(1)  # type: ignore[union-attr]
        text = dotenv.read_text()
        assert alice not in text and "alice:sha256:" in text  # the digest only
        assert oct(dotenv.stat().st_mode & 0o777) == "0o600"
        # Every other line as it was, in its place; only MCP_API_KEYS grew.
        changed = [(a, b) for a, b in zip(original.splitlines(), text.splitlines(), strict=True) if a != b]
        assert len(changed) == 1 and changed[0][0].startswith("MCP_API_KEYS=")

        listed = cli(venv, project, "keys", "list")
        assert "alice: scopes notes:read; 1 key: valid" in listed.stdout
        assert "reaches: list_notes, whoami" in listed.stdout
        assert "sha256" not in listed.stdout and alice not in listed.stdout
        check = cli(venv, project, "check")
        # The copy names its tool key; its admin key has no name, and check says what to do about it.
        assert "WARNING  MCP_ADMIN_API_KEYS: 1 unnamed key(s)" in check.stdout and "--admin" in check.stdout
        assert "WARNING  MCP_API_KEYS" not in check.stdout

        with running_server(venv, project, {}, log_dir=tmp_path) as server:
            assert "principal: alice" in tools_and_whoami(server.url, alice)[1]
            assert "notes:write" in add_note_refusal(server.url, alice)  # her scopes hold

        rotated = cli(venv, project, "keys", "rotate", "alice", "--grace", "1h")
        assert rotated.returncode == 0 and "the old key is valid until" in rotated.stdout, rotated.stderr
        new = re.search(r"^key: (\S+)$", rotated.stdout, re.M).group(1)  # type: ignore[union-attr]
        assert "alice: scopes notes:read; 2 keys: valid until" in cli(venv, project, "keys", "list").stdout
        with running_server(venv, project, {}, log_dir=tmp_path) as server:
            for key in (alice, new):  # both work during the grace, as the same caller
                assert "principal: alice" in tools_and_whoami(server.url, key)[1]

        # A grace that ends while the server runs: the old key is refused from then on, no restart.
        assert cli(venv, project, "keys", "rotate", "alice", "--grace", "3s").returncode == 0
        newest = read_env_file(project)  # noqa: F841 - the file is what the server reads
        with running_server(venv, project, {}, log_dir=tmp_path) as server:
            wait_for(lambda: refused(server.url, new), timeout=60, what="the rotated-out key to end")
        revoked = cli(venv, project, "keys", "revoke", "alice")
        assert revoked.returncode == 0 and "Revoked" in revoked.stdout
        assert "alice" not in cli(venv, project, "keys", "list").stdout
        with running_server(venv, project, {}, log_dir=tmp_path) as server:
            assert refused(server.url, alice) and refused(server.url, new)
        assert cli(venv, project, "keys", "revoke", "alice").returncode == 2  # nothing left to revoke
    finally:
        dotenv.write_text(saved)
        dotenv.chmod(0o600)
