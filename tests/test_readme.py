"""The README's scaffold command works as written: copy with tasks, lock, install, serve, call a tool."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import anyio
import pytest

from support import TEMPLATE_ROOT, Server, clean_env, free_port, http_client, read_env_file, text_of, wait_until_up

README = (TEMPLATE_ROOT / "README.md").read_text()


def readme_command(prefix: str) -> str:
    match = re.search(rf"^({re.escape(prefix)}.*)$", README, re.MULTILINE)
    assert match, f"README has no command starting with {prefix!r}"
    return match.group(1)


def test_readme_test_command_is_what_ci_runs() -> None:
    command = readme_command("pip install uv && uv run pytest")
    ci = (TEMPLATE_ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci and "pip install uv && uv run pytest" in ci
    assert "pytest" in command


@pytest.mark.anyio
async def test_scaffold_command_gives_a_served_authenticated_project(tmp_path: Path) -> None:
    steps = [step.strip() for step in readme_command("pip install uv && uvx copier copy").split("&&")]
    assert steps[0] == "pip install uv"
    copy, cd, serve = steps[1], steps[2], steps[3]
    assert cd == "cd acme-tools" and serve == "uv run acme-tools serve"
    env = clean_env({"TEMPLATE": str(TEMPLATE_ROOT)})
    env.pop("MCP_TEMPLATE_SKIP_LOCK", None)  # the real thing: the task locks with uv
    result = subprocess.run(
        ["bash", "-c", copy], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    project = tmp_path / "acme-tools"
    assert (project / "uv.lock").is_file()
    assert (project / ".git").is_dir()
    assert (project / ".env").stat().st_mode & 0o777 == 0o600
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            shlex.split(serve),
            cwd=project,
            env=clean_env({"MCP_PORT": str(port), "UV_FROZEN": "1"}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log_path)
    try:
        await anyio.to_thread.run_sync(lambda: wait_until_up(server, timeout=300))
        key = read_env_file(project)["MCP_API_KEYS"]
        async with http_client(server.url, key) as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            result_text = text_of(await client.call_tool("whoami", {}))
        assert "whoami" in tools
        assert "principal: key:" in result_text
    finally:
        server.stop()
    # `uv run` reports the signal it forwarded (143); the server itself must have shut down cleanly.
    assert "Application shutdown complete" in server.log(), server.log()
    assert "Traceback" not in server.log()


def test_copy_without_trust_and_tasks_works_after_keygen(tmp_path: Path) -> None:
    env = clean_env()
    copy = subprocess.run(
        ["uvx", "copier", "copy", "--defaults", "--skip-tasks", "--data", "project_name=No Trust",
         str(TEMPLATE_ROOT), "no-trust"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert copy.returncode == 0, copy.stdout + copy.stderr
    project = tmp_path / "no-trust"
    assert not (project / ".env").exists()
    readme = (project / "README.md").read_text()
    assert "keygen --write-env" in readme
    keygen = subprocess.run(
        ["uv", "run", "no-trust", "keygen", "--write-env"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert keygen.returncode == 0, keygen.stdout + keygen.stderr
    assert (project / ".env").stat().st_mode & 0o777 == 0o600
    check = subprocess.run(
        ["uv", "run", "no-trust", "check"], cwd=project, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configuration is valid" in check.stdout


def test_copy_without_trust_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["uvx", "copier", "copy", "--defaults", "--data", "project_name=X", str(TEMPLATE_ROOT), "x"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert not (tmp_path / "x" / "src").exists()
