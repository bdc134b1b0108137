"""Helpers the template's tests share: render, install, start a rendered server, talk to it.

Rendered projects are installed (editable, with their declared dependencies) into one virtual
environment per test session, made with uv; each answer set has its own package name, so several
projects live side by side in it. Servers run as real processes on free loopback ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

TEMPLATE_ROOT = Path(__file__).resolve().parents[2]

BASE = {"project_name": "Acme Tools", "author_name": "Test", "author_email": "test@example.com"}
HOSTILE_TEXT = {
    "project_name": 'Acme "Hostile" \\ Tools <b>*ü*</b> `x` # $HOME',
    "description": 'A """docstring""" breaker"""; __import__("os").system("touch PWNED"); """ \\N{x} ends: "',
    "author_name": 'Zoë "Z" O\'Brien \\ [link](https://example.com)',
}
# Each answer set has its own package name, so all of them can share one virtual environment.
# SAMPLE_TOOLS_READY lists the sample tool modules that exist so far (issue 6 adds the rest).
SAMPLE_TOOLS_READY: list[str] = ["fetch", "files", "notes", "records", "sandbox", "upstream"]
ANSWER_SETS: dict[str, dict[str, Any]] = {
    "stdio": {**BASE, "project_name": "Acme Stdio", "transport": "stdio", "sample_tools": SAMPLE_TOOLS_READY},
    "http_all": {
        **BASE,
        "project_name": "Acme Http",
        "transport": "http",
        "auth": "api_key",
        "sample_tools": SAMPLE_TOOLS_READY,
    },
    "both": {**BASE, "project_name": "Acme Both", "transport": "both", "auth": "api_key", "sample_tools": []},
    "http_none": {
        **BASE,
        "project_name": "Acme Bare",
        "transport": "http",
        "auth": "api_key",
        "sample_tools": [],
    },
    # With notes: its tools need scopes that are not required (notes:read, notes:write), for step-up.
    "oauth": {
        **BASE,
        "project_name": "Acme Oauth",
        "transport": "http",
        "auth": "oauth",
        "sample_tools": ["notes"],
    },
    # Answers are data in every syntax they land in (issue 27): quotes, backslashes, a docstring breaker,
    # Markdown and HTML, non-ASCII. The project must still lint, type-check, pass its tests and `check`.
    "hostile": {**BASE, **HOSTILE_TEXT, "transport": "both", "auth": "api_key", "sample_tools": ["notes"]},
}


def uv() -> str:
    found = shutil.which("uv")
    if not found:
        raise RuntimeError("uv is not installed: pip install uv (the README's test command does this)")
    return found


def git() -> str:
    found = shutil.which("git")
    if not found:
        raise RuntimeError(
            "git is not installed: rendered projects are git repositories (copier's task commits)"
        )
    return found


def set_task_env(name: str, value: str) -> None:
    """Copier hands tasks plumbum's copy of os.environ taken at import time: set both."""
    from plumbum import local

    os.environ[name] = value
    local.env[name] = value


def render(
    answers: Mapping[str, Any],
    dest: Path,
    *,
    vcs_ref: str | None = "HEAD",
    skip_tasks: bool = False,
    src: Path = TEMPLATE_ROOT,
) -> Path:
    from copier import run_copy

    run_copy(
        str(src),
        str(dest),
        data=dict(answers),
        defaults=True,
        unsafe=True,
        vcs_ref=vcs_ref,
        skip_tasks=skip_tasks,
        quiet=True,
    )
    return dest


def package_of(project: Path) -> tuple[str, str]:
    """(command name, package name) of a rendered project."""
    data = tomllib.loads((project / "pyproject.toml").read_text())
    command = next(iter(data["project"]["scripts"]))
    backend = data["tool"].get("uv", {}).get("build-backend")
    if backend is not None:
        package = backend["module-name"]
    else:  # projects of releases before 0.2.0 build with hatchling
        package = data["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"][0].split("/")[-1]
    return command, package


@dataclass
class Venv:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def install(self, project: Path) -> None:
        data = tomllib.loads((project / "pyproject.toml").read_text())
        dev = data.get("dependency-groups", {}).get("dev", [])
        # With every extra (the otel exporter), so that the code behind each one is tested too.
        extras = ",".join(data["project"].get("optional-dependencies", {}))
        target = f"{project}[{extras}]" if extras else str(project)
        subprocess.run(
            [uv(), "pip", "install", "--quiet", "--python", self.python, "-e", target, *dev],
            check=True,
            timeout=600,
        )

    def run(
        self, *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            cwd=cwd,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def make_venv(path: Path) -> Venv:
    if not (path / "bin" / "python").exists():
        subprocess.run(
            [uv(), "venv", "--quiet", "--python", sys.executable, str(path)], check=True, timeout=300
        )
    return Venv(path)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment without any MCP_* variable of the test runner, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_") and k != "VIRTUAL_ENV"}
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_env_file(project: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (project / ".env").read_text().splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def client_key(env: Mapping[str, str]) -> str:
    """The first key of MCP_API_KEYS, as a client sends it: without the name the copy writes before it
    (`alice:mcp_...`)."""
    first = env["MCP_API_KEYS"].split(",")[0].strip()
    return first.rpartition(":")[2] if ":mcp_" in first else first


def key_holder(env: Mapping[str, str]) -> str:
    """The caller the first key of MCP_API_KEYS names: the name the copy writes before it."""
    return env["MCP_API_KEYS"].split(",")[0].strip().partition(":")[0]


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Ask `process` to stop with `sig`; kill it if it has not after `timeout` seconds. Its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


@dataclass
class Server:
    """A rendered project's HTTP server, running as its own process."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    scheme: str = "http"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return stop_process(self.process, sig, timeout)


def start_server(
    venv: Venv,
    project: Path,
    env: Mapping[str, str],
    *,
    port: int | None = None,
    log_dir: Path | None = None,
    wait: bool = True,
    scheme: str = "http",
    ready_kwargs: Mapping[str, Any] | None = None,
    wrapper: Sequence[str] = (),
) -> Server:
    """Start `serve` over HTTP; `wrapper` is a command prefix (e.g. `unshare ...`) the server runs under."""
    command, _ = package_of(project)
    port = port or free_port()
    log_path = (log_dir or project) / f"server-{port}.log"
    handle = log_path.open("wb")
    process = subprocess.Popen(
        [
            *wrapper,
            venv.bin(command),
            "serve",
            "--transport",
            "http",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=project,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    server = Server(process, port, log_path, scheme, dict(env))
    if wait:
        wait_until_up(server, **(ready_kwargs or {}))
    return server


def wait_until_up(server: Server, timeout: float = 30, verify: Any = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            response = httpx2.get(server.base + "/health", timeout=1, verify=verify)
            if response.status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not answer /health within {timeout}s:\n{server.log()}")


def wait_for(
    check: Callable[[], Any], timeout: float = 20, what: str = "condition", interval: float = 0.1
) -> Any:
    """check()'s first truthy answer, asked every `interval` seconds; AssertionError after `timeout`.
    For sync tests waiting on another process's state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def eventually(check: Callable[[], Any], interval: float = 0.05) -> Any:
    """check()'s first truthy answer, asked every `interval` seconds for as long as the caller's cancel scope
    lets it (`with anyio.fail_after(10): await eventually(...)`). For what another process does (a file it
    writes, a line in its log, its exit, a request it sends to a receiver thread): nothing on this event
    loop could set an anyio.Event for it. check() must be quick (a stat, a small read, a poll()): it runs on
    the event loop."""
    while not (found := check()):  # noqa: ASYNC110 - another process's state: no Event to wait on
        await anyio.sleep(interval)
    return found


@contextlib.contextmanager
def running_server(venv: Venv, project: Path, env: Mapping[str, str], **kwargs: Any) -> Iterator[Server]:
    server = start_server(venv, project, env, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def http_client(
    url: str, token: str | None = None, *, mode: str = "auto", **http_kwargs: Any
) -> AsyncIterator[Client]:
    """The SDK's client over Streamable HTTP. mode "auto" speaks 2026-07-28 to our server; "legacy" the
    initialize handshake and 2025-11-25, as most clients in the field still do."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30, **http_kwargs) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def stdio_params(venv: Venv, project: Path, env: Mapping[str, str] | None = None) -> StdioServerParameters:
    command, _ = package_of(project)
    return StdioServerParameters(
        command=venv.bin(command), args=["serve", "--transport", "stdio"], cwd=project, env=clean_env(env)
    )


def text_of(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def jsonrpc(method: str, params: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}}


MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "Mcp-Protocol-Version": "2025-11-25",
}


def post_mcp(
    server: Server,
    body: dict[str, Any],
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> httpx2.Response:
    """A raw JSON-RPC POST, for perimeter tests that look at status codes and headers."""
    all_headers = dict(MCP_HEADERS)
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    all_headers.update(headers or {})
    return httpx2.post(server.url, json=body, headers=all_headers, timeout=30, **kwargs)


async def post_mcp_async(
    http: httpx2.AsyncClient,
    server: Server,
    body: dict[str, Any],
    token: str | None = None,
    address: str | None = None,
) -> httpx2.Response:
    """post_mcp on the test's async client. `address`: the client address to claim in X-Forwarded-For (the
    server honours it when it trusts 127.0.0.1 as its proxy)."""
    headers = dict(MCP_HEADERS)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if address:
        headers["X-Forwarded-For"] = address
    return await http.post(server.url, json=body, headers=headers)
