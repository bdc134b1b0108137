"""Settings and start-up that tell the truth: what `check` passes, `serve` starts with, and nothing else.

The rendered project's own commands, run as a user runs them (`check`, `serve` in a directory with a
.env), on a project rendered once; no server is reached, since each case stops (or must stop) at start-up.
"""

from __future__ import annotations

import re
import socket
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from support import BASE, Venv, client_key, free_port, http_client, package_of, read_env_file, running_server
from support.projects import installed_project

pytestmark = pytest.mark.anyio

KEY = "mcp_startup-tool-key-0123456789abcdefghijkl"
ADMIN = "mcp_startup-admin-key-0123456789abcdefghijk"


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("both")


def run(venv: Venv, project: Path, where: Path, env_text: str, *args: str) -> tuple[int, str]:
    """A project command in `where`, whose .env is `env_text` (and no MCP_* variable in the environment)."""
    (where / ".env").write_text(textwrap.dedent(env_text).lstrip())
    (where / ".env").chmod(0o600)
    command, _ = package_of(project)
    lock = ("--lock", str(project / "tools.lock.json")) if args[0] == "check" else ()
    result = venv.run(venv.bin(command), *args, *lock, cwd=where, timeout=60)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    return result.returncode, output


SOUND = f"""
    MCP_TRANSPORT=stdio
    MCP_API_KEYS={KEY}
    MCP_ADMIN_API_KEYS={ADMIN}
"""


def test_a_sound_env_passes(venv: Venv, project: Path, tmp_path: Path) -> None:
    code, output = run(venv, project, tmp_path, SOUND, "check")
    assert code == 0, output


@pytest.mark.parametrize("command", [("check",), ("serve", "--transport", "stdio")])
def test_a_line_without_equals_stops_start_up_naming_the_line(
    venv: Venv, project: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    # The key pasted on a line of its own: python-dotenv skips it, and the server would start without it.
    env = SOUND + f"    # the admin's new key\n    {ADMIN}-new\n"
    code, output = run(venv, project, tmp_path, env, *command)
    assert code == 2, output
    assert ".env line 5: has no `=`; write NAME=value" in output, output
    assert ADMIN not in output, output  # the line is likely a key: never quoted


@pytest.mark.parametrize("command", [("check",), ("serve", "--transport", "stdio")])
def test_a_name_set_twice_stops_start_up_naming_both_lines(
    venv: Venv, project: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    # A stray second MCP_API_KEYS line would silently drop every key of the first.
    env = SOUND + "    MCP_RATE_LIMIT=100/minute\n    mcp_api_keys=mcp_other-key-0123456789abcdefghijklmn\n"
    code, output = run(venv, project, tmp_path, env, *command)
    assert code == 2, output
    assert ".env line 5: mcp_api_keys is set again (first on line 2)" in output, output
    assert "mcp_other-key" not in output and KEY not in output


def test_a_line_that_does_not_parse_stops_start_up(venv: Venv, project: Path, tmp_path: Path) -> None:
    code, output = run(venv, project, tmp_path, SOUND + "    !! not a setting\n", "check")
    assert code == 2 and ".env line 4: not NAME=value" in output, output


@pytest.mark.parametrize("level", ["debug", "Warning", "info"])
def test_the_log_level_is_accepted_in_any_case(venv: Venv, project: Path, tmp_path: Path, level: str) -> None:
    code, output = run(venv, project, tmp_path, SOUND + f"    MCP_LOG_LEVEL={level}\n", "check")
    assert code == 0, output


@pytest.mark.parametrize("limit", ["0/minute", "100/minute;0/day"])
def test_a_rate_limit_of_nothing_is_refused(venv: Venv, project: Path, tmp_path: Path, limit: str) -> None:
    code, output = run(venv, project, tmp_path, SOUND + f"    MCP_RATE_LIMIT={limit}\n", "check")
    assert code == 2, output
    assert "MCP_RATE_LIMIT" in output and "allows no call at all" in output, output


DESTRUCTIVE = '''
"""A destructive tool whose author forgot read_only=False."""

from ..security.guard import Guard
from ..settings import Settings


def register(guard: Guard, settings: Settings) -> None:
    @guard.tool(destructive=True)
    async def purge_customers() -> str:
        """Delete every customer."""
        return "done"
'''


def test_a_destructive_tool_without_read_only_false_is_named(
    venv: Venv, tmp_path_factory: pytest.TempPathFactory
) -> None:
    answers = {**BASE, "project_name": "Acme Startup", "transport": "stdio", "sample_tools": []}
    project = installed_project(venv, tmp_path_factory.mktemp("startup"), answers, {"purge": DESTRUCTIVE})
    code, output = run(venv, project, project, SOUND, "check")
    assert code == 1 and "ERROR    tool 'purge_customers': add read_only=False" in output, output
    code, output = run(venv, project, project, SOUND, "serve")
    assert code == 2 and "tool 'purge_customers': add read_only=False" in output, output


# ---- the audit store's file -----------------------------------------------------------------------------

SIDE_FILES = ("-wal", "-shm", "-journal")


def files_of(path: Path) -> dict[str, tuple[bytes, int]]:
    """Each file at `path` and beside it (its SQLite side files): (content, mode)."""
    found = {}
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)):
        if file.exists():
            found[file.name] = (file.read_bytes(), file.stat().st_mode & 0o777)
    return found


@pytest.mark.parametrize("database", ["notes.txt", "absent.db"])
def test_an_audit_store_path_that_is_not_a_database_is_refused_and_left_alone(
    venv: Venv, project: Path, tmp_path: Path, database: str
) -> None:
    """A file that is not a database, or side files with no database: `check` says so, and `serve` neither
    changes their mode nor deletes them (SQLite would)."""
    path = tmp_path / "data" / database
    path.parent.mkdir()
    if database == "notes.txt":
        path.write_text("my notes, not a database\n")
        path.chmod(0o644)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        side.write_bytes(b"someone else's " + suffix.encode())
        side.chmod(0o644)
    before = files_of(path)
    env = SOUND + f"    MCP_SECURITY_EVENTS_URL=sqlite:///{path}\n"
    code, output = run(venv, project, tmp_path, env, "check", "--transport", "http")
    assert code == 1 and "ERROR    MCP_SECURITY_EVENTS_URL: " in output, output
    assert ("is not a SQLite database" if database == "notes.txt" else "belong to no database") in output
    code, output = run(
        venv, project, tmp_path, env, "serve", "--transport", "http", "--port", str(free_port())
    )
    assert code == 2 and "MCP_SECURITY_EVENTS_URL" in output, output
    assert files_of(path) == before
    assert path.exists() == (database == "notes.txt")


# ---- what `serve` says on stderr ----------------------------------------------------------------------

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


async def test_stderr_that_is_not_a_terminal_has_one_format_and_no_false_alarms(
    venv: Venv, project: Path, tmp_path: Path
) -> None:
    """A file (as under a service manager): every line one plain format or a security event, never wrapped,
    and no routine start-up line that reads like a problem."""
    env = {**read_env_file(project), "MCP_DATA_DIR": str(tmp_path)}
    with running_server(venv, project, env, log_dir=tmp_path) as server:
        async with http_client(server.url, client_key(env)) as client:
            assert not (await client.call_tool("whoami", {})).is_error
        server.stop()
        lines = [line for line in server.log().splitlines() if line.strip()]
    json_lines = ('{"logger":"security"', '{"logger":"audit"')  # events, and the audit chain's heads
    odd = [line for line in lines if not (LINE.match(line) or line.startswith(json_lines))]
    assert not odd, odd
    assert any("Uvicorn running on" in line for line in lines) and any("POST /mcp" in line for line in lines)
    log = "\n".join(lines)
    assert "session manager" not in log and "lifespan" not in log, log


def test_a_port_in_use_is_named_with_its_fix(venv: Venv, project: Path, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = ("serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port))
        code, output = run(venv, project, tmp_path, SOUND, *command)
    assert code == 2, output
    assert f"port {port} on 127.0.0.1 is in use" in output and "MCP_PORT or --port" in output, output
    assert "Application startup" not in output and "Errno" not in output, output
