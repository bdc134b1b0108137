"""The rendered Dockerfile built and run for real (podman, runc), as the README runs it: read-only root,
the non-root uid 10001, a /data volume, --env-file, the port on loopback. The container's own HEALTHCHECK
passes with a public Host allow-list, `check` passes in it, tools work through the real client, run_python
refuses cleanly (no user namespaces or cgroup delegation here), and nothing but /data (and the README's
/tmp tmpfs) is writable.

What the stand-in base cannot prove: the official image is python:3.13-slim (Python 3.13 in /usr/local);
the stand-in is Debian bookworm's Python 3.11 in /usr, with pip allowed to install into it and
SSL_CERT_FILE set (so uv trusts this machine's TLS-inspecting proxy). So this proves the Dockerfile's own
steps, users, permissions, volume, healthcheck and entry point, not that the project runs on 3.13 or
that the official image's digest, pip or certificates behave the same. The HEALTHCHECK is run with
`podman healthcheck run` (podman's timer needs systemd, which is not here); `--format docker` keeps it
(podman's default OCI format drops HEALTHCHECK). podman's --read-only adds tmpfs mounts of its own
(/run, /var/tmp) unless --read-only-tmpfs=false, which Docker's --read-only never does: it is given, so
the container gets what Docker would give.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from support import client_key, http_client, package_of, read_env_file, text_of, uv
from support.containers import Podman

pytestmark = pytest.mark.anyio
PUBLIC_HOST = "mcp.example.com"
# Paths inside the container, not on this machine.
TMP, SHM = "/tmp", "/dev/shm"  # noqa: S108
NOT_WRITABLE = ("/app/x", "/app/.venv/x", "/etc/x", "/usr/local/x", "/var/tmp/x", "/home/x", "/run/x")  # noqa: S108


@dataclass
class Running:
    podman: Podman
    name: str
    port: int
    env: dict[str, str]
    command: str
    healthy: subprocess.CompletedProcess[str] | None = None  # the HEALTHCHECK's first passing run (or last)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.podman.run("exec", self.name, *args, check=False, timeout=180)


def free_host_port() -> int:
    from support import free_port

    return free_port()


@pytest.fixture(scope="module")
def container(rendered: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    work = tmp_path_factory.mktemp("container")
    podman = Podman(work)
    suffix = secrets.token_hex(4)
    base = podman.stand_in_python_image(work, f"localhost/mcp-test-python:{suffix}")
    project = work / "project"
    shutil.copytree(rendered("http_all"), project)
    subprocess.run([uv(), "lock", "--quiet"], cwd=project, check=True, timeout=600)  # README: `uv lock` once
    command, _ = package_of(project)
    image, name, volume = f"localhost/mcp-test-app:{suffix}", f"mcp-test-{suffix}", f"mcp-test-data-{suffix}"
    env_file = work / "container.env"
    env = {**read_env_file(project), "MCP_ALLOWED_HOSTS": PUBLIC_HOST}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    port = free_host_port()
    try:
        podman.run("build", "--format", "docker", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}",
                   "-t", image, str(project), timeout=1800)  # fmt: skip
        podman.run("run", "-d", "--name", name, "--read-only", "--read-only-tmpfs=false", "--tmpfs", TMP,
                   "-v", f"{volume}:/data", "--env-file", str(env_file), "-p", f"127.0.0.1:{port}:8000",
                   image)  # fmt: skip
        running = Running(podman, name, port, env, command)
        running.healthy = wait_healthy(running)  # every test, whichever runs first, meets a started server
        yield running
    finally:
        podman.reset()


def wait_healthy(container: Running, seconds: float = 60) -> subprocess.CompletedProcess[str]:
    """The image's own HEALTHCHECK, run until it passes (podman runs it on demand: no systemd here)."""
    deadline = time.monotonic() + seconds
    while True:
        health = container.podman.run("healthcheck", "run", container.name, check=False)
        if health.returncode == 0 or time.monotonic() > deadline:
            return health
        time.sleep(1)


def test_the_healthcheck_passes_with_a_public_host_allow_list(container: Running) -> None:
    health = container.healthy
    assert health is not None and health.returncode == 0, health and health.stdout + health.stderr
    # The allow-list is real: the same request by its loopback address is refused (421).
    assert httpx2.post(container.url, json={}, timeout=10).status_code == 421


def test_it_runs_as_the_unprivileged_user_and_check_passes(container: Running) -> None:
    assert container.exec("id", "-u").stdout.strip() == "10001"
    check = container.exec(container.command, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configuration is valid" in check.stdout and "match tools.lock.json" in check.stdout


async def public_host(request: Any) -> None:
    """Address the container as its public name, as a client behind DNS or a proxy would."""
    request.headers["Host"] = PUBLIC_HOST


async def test_tools_work_and_run_python_refuses_cleanly(container: Running) -> None:
    hooks = {"request": [public_host]}
    async with http_client(container.url, client_key(container.env), event_hooks=hooks) as client:
        saved = await client.call_tool("add_note", {"text": "kept in /data"})
        listed = text_of(await client.call_tool("list_notes", {}))
        records = await client.call_tool(
            "query_records", {"table": "products", "columns": ["name"], "limit": 2}
        )
        sandboxed = await client.call_tool("run_python", {"code": "print(6 * 7)"})
    assert not saved.is_error and "kept in /data" in listed
    assert not records.is_error and '{"name": "Trail shoes"}' in text_of(records)
    refusal = text_of(sandboxed)
    assert sandboxed.is_error and "42" not in refusal, refusal
    for leak in ("Traceback", "/sys/fs/cgroup", "/app/", "libpod"):
        assert leak not in refusal, refusal


def test_nothing_but_data_is_writable(container: Running) -> None:
    found = container.exec(
        "find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", ")", "-prune", "-o", "-writable", "-print"
    )
    writable = {line for line in found.stdout.splitlines() if line}
    # /dev/shm and /dev/mqueue are every container's (Docker's too); /tmp is the README's --tmpfs.
    allowed = {TMP, SHM, "/dev/mqueue", "/dev/null", "/dev/zero", "/dev/full", "/dev/random",
               "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/console", "/dev/pts/ptmx",
               "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr"}  # fmt: skip
    unexpected = sorted(p for p in writable - allowed if p != "/data" and not p.startswith("/data/"))
    assert not unexpected, unexpected
    assert "/data" in writable
    for path in NOT_WRITABLE:
        wrote = container.exec("sh", "-c", f"echo x > {path}")
        assert wrote.returncode != 0, path
    assert container.exec("sh", "-c", "echo x > /data/probe && rm /data/probe").returncode == 0
