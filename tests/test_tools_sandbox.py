"""run_python through the real client against a rendered HTTP server, with real bubblewrap.

Every escape attempt runs for real inside bwrap; the test checks it was contained and that the server
still answers /health and another tool call afterwards. bwrap must be installed: the test fails, not
skips, without it (apt-get install bubblewrap).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from support import Server, Venv, client_key, http_client, read_env_file, running_server, text_of

pytestmark = pytest.mark.anyio

# Tests run as root here, so each sandbox runs as an unprivileged uid: the interpreter must be world-readable.
SANDBOX_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else os.path.realpath(sys.executable)
SETTINGS = {
    "MCP_SANDBOX_PYTHON": SANDBOX_PYTHON,
    "MCP_SANDBOX_TIMEOUT_SECONDS": "5",
    "MCP_SANDBOX_CPU_SECONDS": "2",
    "MCP_SANDBOX_MEMORY_MB": "128",
    "MCP_SANDBOX_MAX_OUTPUT_BYTES": "4096",
    "MCP_SANDBOX_RATE_LIMIT": "1000/minute",
    "MCP_RATE_LIMIT": "1000/minute",
}


@pytest.fixture(scope="module")
def project(rendered: Callable[[str], Path]) -> Path:
    return rendered("http_all")


@pytest.fixture(scope="module")
def server(project: Path, venv: Venv) -> Iterator[Server]:
    assert shutil.which("bwrap"), "bubblewrap is required for these tests: apt-get install bubblewrap"
    with running_server(venv, project, {**read_env_file(project), **SETTINGS}) as running:
        yield running


def events(server: Server, tool: str) -> list[dict[str, object]]:
    lines = [line for line in server.log().splitlines() if line.startswith('{"logger":"security"')]
    return [event for event in map(json.loads, lines) if event.get("tool") == tool]


async def run_python(server: Server, code: str) -> tuple[bool, str]:
    async with http_client(server.url, client_key(server.env)) as client:
        result = await client.call_tool("run_python", {"code": code})
    return bool(result.is_error), text_of(result)


async def assert_healthy(server: Server) -> None:
    response = await anyio.to_thread.run_sync(lambda: httpx2.get(server.base + "/health", timeout=10))
    assert response.status_code == 200
    is_error, text = await run_python(server, "print(6 * 7)")
    assert not is_error and "exit code 0" in text and "42" in text, text


def test_bwrap_is_installed() -> None:
    assert shutil.which("bwrap"), "bubblewrap is required: apt-get install bubblewrap"
    assert shutil.which("prlimit"), "prlimit (util-linux) is required"


async def test_code_runs_and_output_is_fenced(server: Server) -> None:
    is_error, text = await run_python(server, "import sys\nprint('hello', sys.version_info[0])")
    assert not is_error, text
    assert "hello 3" in text and "exit code 0" in text
    assert text.startswith("<untrusted-data")


async def test_host_files_are_not_visible(server: Server, project: Path) -> None:
    secret_key = client_key(read_env_file(project))
    code = f"""
import os
print("root:", sorted(os.listdir("/")))
for path in ["/etc/shadow", "/etc/passwd", {str(project / ".env")!r}, "/root/.bashrc"]:
    try:
        print(path, "READ", open(path).read()[:200])
    except OSError as exc:
        print(path, "blocked", type(exc).__name__)
"""
    is_error, text = await run_python(server, code)
    assert not is_error, text
    assert "READ" not in text and text.count("blocked") == 4, text
    assert secret_key not in text
    for hidden in ("'etc'", "'home'", "'root'", "'work'"):
        assert hidden not in text, text
    await assert_healthy(server)


async def test_no_network(server: Server) -> None:
    code = f"""
import socket
for host, port in [("127.0.0.1", {server.port}), ("1.1.1.1", 443), ("::1", {server.port})]:
    try:
        socket.create_connection((host, port), timeout=2)
        print(host, "CONNECTED")
    except OSError as exc:
        print(host, "blocked", type(exc).__name__)
try:
    socket.getaddrinfo("example.com", 443)
    print("DNS RESOLVED")
except OSError:
    print("dns blocked")
"""
    is_error, text = await run_python(server, code)
    assert not is_error, text
    assert "CONNECTED" not in text and "RESOLVED" not in text, text
    assert text.count("blocked") == 4, text
    await assert_healthy(server)


@pytest.mark.parametrize(
    ("name", "code", "expected"),
    [
        (
            "fork bomb",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
            # the pids cap stops the forks; the children's memory may reach the group's cap first
            ("killed after", "killed by signal", "over the sandbox's memory limit"),
        ),
        ("memory bomb", "data = bytearray(1024 ** 3)\nprint(len(data))", ("MemoryError", "killed by signal")),
        ("endless loop", "while True:\n    pass", ("killed by signal", "killed after")),
        ("huge output", "while True:\n    print('x' * 1000)", ("output exceeded",)),
        ("big file", "open('/tmp/f', 'wb').write(b'x' * 50_000_000)", ("File too large", "killed by signal")),
    ],
)
async def test_abuse_is_contained(server: Server, name: str, code: str, expected: tuple[str, ...]) -> None:
    is_error, text = await run_python(server, code)
    assert not is_error, text
    assert any(marker in text for marker in expected), f"{name}: {text[:500]}"
    assert len(text) < 6_000  # output capped at 4096 bytes plus the fence
    await assert_healthy(server)


async def test_refuses_without_a_working_bwrap(project: Path, venv: Venv, tmp_path: Path) -> None:
    env = {**read_env_file(project), **SETTINGS, "PATH": str(tmp_path)}  # no bwrap, no prlimit
    with running_server(venv, project, env) as server:
        is_error, text = await run_python(server, "print('must not run')")
        assert is_error
        assert "sandbox is unavailable" in text and "bwrap" in text, text
        assert "must not run" not in text
        refusals = [e for e in events(server, "run_python") if e["event"] == "tool_execution_failed"]
        assert refusals and refusals[-1]["details"]["rule"] == "sandbox_unavailable"  # type: ignore[index]


async def test_memory_is_capped_for_the_whole_process_tree(server: Server) -> None:
    # Eight processes of 48 MB each: within the per-process limit (128 MB), four times the sandbox's.
    code = """
import os, time
children = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:
        block = bytearray(48 * 1024 * 1024)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        time.sleep(1)
        os._exit(0)
    children.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
print("survivors", sum(1 for status in statuses if status == 0))
"""
    is_error, text = await run_python(server, code)
    assert not is_error, text
    assert "went over the sandbox's memory limit (128 MB for all its processes together)" in text, text
    survivors = int(text.rsplit("survivors", 1)[1].split()[0]) if "survivors" in text else 0
    assert survivors * 48 <= 128, text
    await assert_healthy(server)


async def test_every_writable_filesystem_is_bounded(server: Server) -> None:
    # Files under the per-file limit (1 MiB), 100 of them: each tmpfs fills up at its size (16 MiB).
    code = """
for directory in ["/dev/shm", "/tmp", "", "/dev", "/proc"]:
    try:
        for number in range(100):
            with open(f"{directory}/fill{number}", "wb") as sink:
                sink.write(b"x" * 524_288)
        print(directory or "/", "FILLED")
    except OSError as exc:
        print(directory or "/", "refused", exc.strerror)
"""
    is_error, text = await run_python(server, code)
    assert not is_error, text
    assert "FILLED" not in text and text.count("refused") == 5, text
    assert "/dev/shm refused No space left on device" in text, text  # noqa: S108 - the sandbox's own output
    assert "/tmp refused No space left on device" in text, text  # noqa: S108 - the sandbox's own output
    assert "/ refused Read-only file system" in text and "/dev refused Read-only file system" in text, text
    await assert_healthy(server)


async def test_nested_user_namespaces_and_unlisted_syscalls_are_refused(server: Server) -> None:
    code = """
import ctypes, errno, os, subprocess
print("unshare", subprocess.run(["unshare", "-U", "true"], capture_output=True).returncode)
print("unshare -r", subprocess.run(["unshare", "-r", "true"], capture_output=True).returncode)
libc = ctypes.CDLL(None, use_errno=True)
for name, number in [("keyctl", 250), ("ptrace", 101), ("bpf", 321), ("setns", 308), ("mount", 165)]:
    print(name, libc.syscall(number, 0, 0, 0, 0, 0), errno.errorcode.get(ctypes.get_errno()))
print("seccomp", [line for line in open("/proc/self/status") if line.startswith("Seccomp:")])
"""
    is_error, text = await run_python(server, code)
    assert not is_error, text
    assert "unshare 1" in text and "unshare -r 1" in text, text
    for name in ("keyctl", "ptrace", "bpf", "setns", "mount"):
        assert f"{name} -1 EPERM" in text, text
    assert "Seccomp:\\t2" in text, text
    await assert_healthy(server)


def bwrap_without_seccomp() -> Path:
    """A directory holding a `bwrap` that silently ignores --seccomp and runs the real one."""
    real_bwrap = shutil.which("bwrap")
    assert real_bwrap
    # The sandbox user must be able to run it: a world-readable directory, not pytest's private tmp_path.
    directory = Path(tempfile.mkdtemp(prefix="fake-bwrap-"))
    directory.chmod(0o755)
    fake = directory / "bwrap"
    fake.write_text(
        "#!/usr/bin/python3\nimport os, sys\nargs = sys.argv[1:]\ni = args.index('--seccomp')\n"
        f"del args[i:i + 2]\nos.execv({real_bwrap!r}, [{real_bwrap!r}, *args])\n"
    )
    fake.chmod(0o755)
    return directory


async def test_refuses_when_bwrap_drops_the_syscall_filter(project: Path, venv: Venv) -> None:
    # A bwrap that silently ignores --seccomp: the start-up probe sees no filter and refuses to run code.
    directory = await anyio.to_thread.run_sync(bwrap_without_seccomp)
    try:
        env = {**read_env_file(project), **SETTINGS, "PATH": f"{directory}:/usr/bin:/bin"}
        with running_server(venv, project, env) as unfiltered:
            is_error, text = await run_python(unfiltered, "print('must not run')")
            assert is_error and "without its syscall filter" in text, text
            assert "must not run" not in text
    finally:
        await anyio.to_thread.run_sync(shutil.rmtree, directory)


async def test_refuses_when_the_sandbox_cannot_be_capped(project: Path, venv: Venv) -> None:
    # The server in a mount namespace whose /sys/fs/cgroup is empty: no cgroup, so no code is run.
    env = {**read_env_file(project), **SETTINGS}
    wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs none /sys/fs/cgroup && exec "$@"',
        "no-cgroups",
    ]
    with running_server(venv, project, env, wrapper=wrapper) as uncapped:
        is_error, text = await run_python(uncapped, "print('must not run')")
        assert is_error and "cannot be capped as a whole" in text, text
        assert "must not run" not in text
