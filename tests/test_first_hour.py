"""A new user's first hour (issue 12): `check` tells the truth and writes nothing, start-up errors are one
or two lines on every command, the Dockerfile's HEALTHCHECK works behind a public host allow-list,
clients' own MCP_* variables do not stop a stdio server, the sandbox finds a Python it can read, and
what the server writes is private and ignored by git. All against real rendered projects and processes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client

from support import (
    BASE,
    Server,
    Venv,
    clean_env,
    client_key,
    free_port,
    git,
    http_client,
    package_of,
    read_env_file,
    render,
    running_server,
    stdio_params,
    text_of,
)
from support.perimeter import security_events
from support.redis import running_redis
from support.tooling import add_tool_module

pytestmark = pytest.mark.anyio

ANSWERS = {
    **BASE,
    "project_name": "Acme Startup",
    "transport": "both",
    "auth": "api_key",
    "sample_tools": ["files", "notes", "records"],
}
# The variables Claude Code and the MCP Inspector document for themselves; a client may pass its whole
# environment to the server it spawns.
SLOW_START = {"timeout": 120}  # 2 cores shared by many test workers: start-up can take a while
CLIENT_VARIABLES = {"MCP_TIMEOUT": "30000", "MCP_TOOL_TIMEOUT": "60000", "MCP_AUTO_OPEN_ENABLED": "false"}
UNBOUNDED_TOOL = '''
from ..security.guard import Guard
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True)
    async def shout(text: str) -> str:
        """Repeat text loudly."""
        return text.upper()
'''
SYNC_TOOL = '''
from typing import Annotated

from pydantic import Field

from ..security.guard import Guard
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(read_only=True)
    def shout(text: Annotated[str, Field(max_length=100)]) -> str:
        """Repeat text loudly."""
        return text.upper()
'''


@pytest.fixture(scope="module")
def project(venv: Venv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = render(ANSWERS, tmp_path_factory.mktemp("first-hour") / "project")
    venv.install(project)
    return project


def run(
    venv: Venv, project: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command, _ = package_of(project)
    return venv.run(venv.bin(command), *args, cwd=cwd or project, env=env, timeout=120)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and directory under root (Python's own bytecode caches aside): mode, size, mtime."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if "__pycache__" in path.parts:
            continue
        info = path.lstat()
        found[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def copy_of(project: Path, dest: Path) -> Path:
    """A copy of a rendered project's working tree: the installed package is the original's, but `.env`,
    `tools.lock.json` and everything the server writes are the copy's (they are relative to the cwd)."""
    # Without the harness's own server-<port>.log files, which other modules' servers left there.
    shutil.copytree(project, dest, symlinks=True, ignore=shutil.ignore_patterns("server-*.log"))
    return dest


# --- item 4: check reports what serve will meet, and creates nothing ------------------------------


def test_check_creates_no_file_and_leaves_the_audit_db_alone(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    project = copy_of(rendered("http_all"), tmp_path / "p")
    before = snapshot(project)
    result = run(venv, project, "check", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(project) == before, "check created or changed files"
    assert not (project / "data").exists()
    assert "created at first start" in result.stdout

    # After a real serve (audit DB, notes, records, files root), check still touches none of them.
    with running_server(venv, project, read_env_file(project), ready_kwargs=SLOW_START):
        pass
    assert (project / "data" / "security-events.db").is_file()
    before = snapshot(project)
    result = run(venv, project, "check", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(project) == before, "check changed what serve wrote"


def test_check_reports_audit_location_key_counts_and_sandbox(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    project = copy_of(rendered("http_all"), tmp_path / "p")
    env = {
        "MCP_API_KEYS": "mcp_first-key-7bT2xQv9LmZr4KpW8sNd,sha256:" + "a" * 64,
        "MCP_ADMIN_API_KEYS": "mcp_admin-key-Hq3nV8cRt2YwL6jXp5Fz",
    }
    result = run(venv, project, "check", env=env, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"audit trail: SQLite file data/security-events.db (in {project})" in result.stdout
    assert "keys: 2 tool key(s) in MCP_API_KEYS, 1 admin key(s) in MCP_ADMIN_API_KEYS" in result.stdout
    for key in ("mcp_first-key", "a" * 64, "mcp_admin-key"):
        assert key not in result.stdout + result.stderr
    # As root with a Python under /root (pyenv, uv), the server's own interpreter is unreadable to the
    # sandbox's uid: check names the readable system Python it picked instead (item 8).
    assert "sandbox: available (bubblewrap, " in result.stdout, result.stdout
    assert "WARNING  run_python" not in result.stdout

    elsewhere = run(venv, project, "check", env={**env, "MCP_SECURITY_EVENTS_URL": "memory://"}, cwd=project)
    assert "audit trail: memory (lost when the server stops)" in elsewhere.stdout


def test_an_unreadable_sandbox_python_names_the_setting(
    rendered: Callable[[str], Path], venv: Venv, tmp_path: Path
) -> None:
    """Item 8: a Python under a private directory. As root the per-call uid cannot read it."""
    private = tmp_path / "home" / "bin"
    private.mkdir(parents=True)
    (tmp_path / "home").chmod(0o700)
    python = private / "python3"
    shutil.copy2(
        os.path.realpath("/usr/bin/python3") if Path("/usr/bin/python3").exists() else sys.executable, python
    )
    project = rendered("http_all")
    result = run(
        venv, project, "check", env={"MCP_SANDBOX_PYTHON": str(python)}, cwd=copy_of(project, tmp_path / "p")
    )
    if os.geteuid() == 0:
        assert "WARNING  run_python is disabled" in result.stdout, result.stdout
        warning = next(line for line in result.stdout.splitlines() if "run_python is disabled" in line)
        assert "MCP_SANDBOX_PYTHON" in warning and "/usr/bin/python3" in warning, warning
        assert "user namespaces" not in warning  # not the wrong fix
    else:  # a non-root server runs each sandbox as itself, and can read its own files
        assert "sandbox: available" in result.stdout, result.stdout


def test_unreachable_rate_limit_redis_fails_check_and_stops_serve(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    with running_redis(tmp_path / "redis") as redis_server:
        url = redis_server.url
    env = {**read_env_file(project), "MCP_RATE_LIMIT_STORAGE": url}  # Redis stopped: nothing listens
    checked = run(venv, project, "check", "--transport", "http", env=env)
    assert checked.returncode == 1
    assert (
        f"ERROR    MCP_RATE_LIMIT_STORAGE: cannot reach Redis at 127.0.0.1:{redis_server.port}"
        in checked.stdout
    )
    # `check --offline` (the rendered CI's, without the stores) contacts neither store, and says so.
    offline = run(
        venv,
        project,
        "check",
        "--transport",
        "http",
        "--offline",
        env={**env, "MCP_SECURITY_EVENTS_URL": url},
    )
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "(redis) (not contacted: --offline)" in offline.stdout
    assert (
        f"audit trail: Redis at 127.0.0.1:{redis_server.port}/0 (not contacted: --offline)" in offline.stdout
    )
    assert offline.stdout.rstrip().endswith(
        "configuration is valid offline (no other server was contacted; see the facts above)"
    )
    for transport in ("http", "stdio"):
        served = run(venv, project, "serve", "--transport", transport, "--port", str(free_port()), env=env)
        assert served.returncode == 2, served.stdout + served.stderr
        assert served.stderr.startswith("acme-startup: MCP_RATE_LIMIT_STORAGE: cannot reach Redis"), (
            served.stderr
        )
        assert len(served.stderr.strip().splitlines()) == 1, served.stderr


def test_a_transport_the_project_lacks_is_refused_readably(
    rendered: Callable[[str], Path], venv: Venv
) -> None:
    project = rendered("http_all")
    for command in ("check", "serve"):
        result = run(venv, project, command, env={"MCP_TRANSPORT": "stdio"})
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip() == (
            "acme-http: MCP_TRANSPORT=stdio: this project was generated for http only; "
            "set MCP_TRANSPORT=http (or regenerate it with transport=both)"
        )


# --- item 5: start-up errors are one or two lines on every command --------------------------------


@pytest.fixture
def broken_tool(project: Path) -> Iterator[Callable[[str], None]]:
    _, package = package_of(project)
    tools = project / "src" / package / "tools"

    def install(source: str) -> None:
        add_tool_module(project, "broken", source)

    yield install
    (tools / "broken.py").unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (UNBOUNDED_TOOL, "add Field(max_length=...)"),
        (SYNC_TOOL, "must be async"),
    ],
)
def test_a_broken_tool_stops_every_command_in_two_lines(
    project: Path, venv: Venv, broken_tool: Callable[[str], None], source: str, says: str
) -> None:
    broken_tool(source)
    env = read_env_file(project)
    for args in (
        ("serve", "--transport", "stdio"),
        ("serve", "--transport", "http", "--port", str(free_port())),
    ):
        result = run(venv, project, *args, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) <= 2 and "Traceback" not in result.stderr, result.stderr
        assert says in lines[0] and "shout" in lines[0], lines
    checked = run(venv, project, "check", env=env)
    assert checked.returncode == 1 and says in checked.stdout and "Traceback" not in checked.stderr
    debug = run(venv, project, "serve", "--transport", "stdio", env={**env, "MCP_LOG_LEVEL": "DEBUG"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr  # the real traceback, when asked for


def test_settings_errors_are_short_on_every_command(project: Path, venv: Venv) -> None:
    env = {**read_env_file(project), "MCP_PORT": "not-a-port"}
    for args in (("serve", "--transport", "stdio"), ("serve", "--transport", "http"), ("check",)):
        result = run(venv, project, *args, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert len(result.stderr.strip().splitlines()) == 2 and "MCP_PORT" in result.stderr, result.stderr
    again = run(venv, project, "keygen", "--write-env")  # .env exists: one line, not overwritten
    assert again.returncode == 1 and len(again.stdout.strip().splitlines()) == 1, again.stdout + again.stderr
    assert "Traceback" not in again.stderr


# --- item 7: clients' own MCP_* variables do not stop a stdio server -------------------------------


async def test_a_stdio_server_starts_with_a_clients_variables(project: Path, venv: Venv) -> None:
    async with Client(stdio_params(venv, project, CLIENT_VARIABLES)) as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error, text_of(result)


def test_a_misspelled_setting_still_stops_stdio_and_an_unknown_name_in_env_file_too(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    for name, fix in (("MCP_RATE_LIMTI", "MCP_RATE_LIMIT"), ("MCP_API_KEY", "MCP_API_KEYS")):
        result = run(
            venv, project, "serve", "--transport", "stdio", env={**CLIENT_VARIABLES, name: "5/minute"}
        )
        assert result.returncode == 2
        assert (
            result.stderr.strip()
            == f"acme-startup: unknown setting {name}: did you mean {fix}? (see .env.example)"
        )
    copy = copy_of(project, tmp_path / "p")
    with (copy / ".env").open("a") as env_file:
        env_file.write("MCP_TIMEOUT=30000\n")
    result = run(venv, copy, "serve", "--transport", "stdio", cwd=copy)
    assert result.returncode == 2 and "MCP_TIMEOUT: unknown setting in .env" in result.stderr, result.stderr


# --- item 6: the Dockerfile's HEALTHCHECK with a public MCP_ALLOWED_HOSTS ----------------------------


def dockerfile_settings(project: Path) -> tuple[dict[str, str], list[str]]:
    """The MCP_* values the image's ENV sets, and the HEALTHCHECK's exec-form command."""
    text = (project / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    healthcheck: list[str] = []
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line.split()[1:]:
                name, _, value = pair.partition("=")
                if name.startswith("MCP_"):
                    env[name] = value
        if line.startswith("HEALTHCHECK "):
            healthcheck = json.loads(line.split(" CMD ", 1)[1])
    assert env and healthcheck, "no ENV or HEALTHCHECK in the Dockerfile"
    return env, healthcheck


def test_healthcheck_answers_with_a_public_host_allow_list(project: Path, venv: Venv, tmp_path: Path) -> None:
    image_env, healthcheck = dockerfile_settings(project)
    assert healthcheck[0] == "python" and image_env["MCP_HOST"] == "0.0.0.0"  # noqa: S104 - the Dockerfile's ENV under test, not a bind
    port = free_port()
    data = tmp_path / "data"
    # The image's settings, with loopback for 0.0.0.0 (tests bind loopback only) and /data in a temp dir.
    env = {
        **image_env,
        **read_env_file(project),
        "MCP_HOST": "127.0.0.1",
        "MCP_PORT": str(port),
        "MCP_DATA_DIR": str(data),
        "MCP_FILES_ROOT": str(data / "files"),
        "MCP_ALLOWED_HOSTS": "mcp.example.com",  # what the README's container advice says to set
    }
    with running_server(venv, project, env, port=port, ready_kwargs=SLOW_START) as server:
        before = len(security_events(server))
        for _ in range(3):
            probe = subprocess.run(
                [venv.python, *healthcheck[1:]],
                env=clean_env({"MCP_PORT": str(port)}),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert probe.returncode == 0, probe.stderr
        for host in (f"10.42.0.7:{port}", "10.42.0.7", f"127.0.0.1:{port}"):  # an orchestrator's pod IP
            for path in ("/health", "/health?ready"):
                answer = httpx2.get(server.base + path, headers={"Host": host}, timeout=10)
                assert answer.status_code == 200, (host, path, answer.text)
                assert answer.headers["x-content-type-options"] == "nosniff"
        assert len(security_events(server)) == before, "health probes wrote events"
        assert_other_paths_keep_the_host_check(server, client_key(env), env["MCP_ADMIN_API_KEYS"])


def assert_other_paths_keep_the_host_check(server: Server, tool_key: str, admin_key: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25"}
    for host in ("10.42.0.7", "127.0.0.1", "evil.example"):
        mcp = httpx2.post(
            server.url,
            json=body,
            timeout=10,
            headers={**headers, "Host": host, "Authorization": f"Bearer {tool_key}"},
        )
        assert mcp.status_code == 421, (host, mcp.status_code)
        events = httpx2.get(
            server.base + "/security/events",
            timeout=10,
            headers={"Host": host, "Authorization": f"Bearer {admin_key}"},
        )
        assert events.status_code == 421, (host, events.status_code)
    public = httpx2.post(
        server.url,
        json=body,
        timeout=10,
        headers={**headers, "Host": "mcp.example.com", "Authorization": f"Bearer {tool_key}"},
    )
    assert public.status_code == 200, public.text
    # Not a way around the Origin check either.
    origin = httpx2.get(
        server.base + "/health",
        headers={"Host": "evil.example", "Origin": "https://evil.example"},
        timeout=10,
    )
    assert origin.status_code == 403


# --- item 9: what the server writes is private, and git ignores it ---------------------------------


async def test_runtime_files_are_private_and_ignored_by_git(
    project: Path, venv: Venv, tmp_path: Path
) -> None:
    work = copy_of(project, tmp_path / "p")
    assert (await anyio.run_process([git(), "status", "--porcelain"], cwd=work)).stdout == b""
    env = {**read_env_file(work), "MCP_SECURITY_EVENTS_URL": "sqlite:///audit/events.db"}  # relocated
    with running_server(venv, work, env, ready_kwargs=SLOW_START, log_dir=tmp_path) as server:
        async with http_client(server.url, client_key(env)) as client:
            for name, arguments in (
                ("read_file", {"path": "welcome.txt"}),
                ("add_note", {"text": "hello"}),
                ("list_notes", {}),
                ("query_records", {"table": "products"}),
            ):
                result = await client.call_tool(name, arguments)
                assert not result.is_error, (name, text_of(result))
        modes = {
            str(path.relative_to(work)): stat.S_IMODE(path.stat().st_mode)
            for root in (work / "data", work / "audit")
            for path in [root, *root.rglob("*")]
        }
    # The audit store keeps its connections open, so its WAL and SHM files exist while it runs.
    assert {"audit/events.db-wal", "audit/events.db-shm", "data/notes.db", "data/files/welcome.txt"} <= set(
        modes
    )
    for name, mode in modes.items():
        if (work / name).is_dir():
            assert mode == 0o700, (name, oct(mode))
        else:
            assert mode in (0o600, 0o400), (name, oct(mode))  # records.db is read-only: 0400
    status = await anyio.run_process([git(), "status", "--porcelain", "--untracked-files=all"], cwd=work)
    assert status.stdout == b"", f"git would commit runtime files:\n{status.stdout.decode()}"
