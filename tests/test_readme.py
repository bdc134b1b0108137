"""The template README's blocks run as written: install uv, copy with tasks, lock, serve, call a tool,
update."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from support import (
    TEMPLATE_ROOT,
    clean_env,
    client_key,
    free_port,
    http_client,
    key_holder,
    read_env_file,
    text_of,
    uv,
)
from support.readme import EXECUTED, Terminal, blocks, convention_problems

README = (TEMPLATE_ROOT / "README.md").read_text()


def uv_cache() -> str:
    return subprocess.run([uv(), "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()


def base_python_bin() -> Path:
    """The directory of the plain (not Debian's) Python the tests run on, with its pip."""
    return Path(getattr(sys, "_base_executable", sys.executable)).resolve().parent


def test_readme_blocks_follow_the_convention() -> None:
    assert not convention_problems(README)
    runnable = [block for block in blocks(README) if block.lang in EXECUTED and block.skip is None]
    assert runnable, "the README has no block a test runs"


def test_readme_test_command_is_what_ci_runs() -> None:
    (block,) = [block for block in blocks(README) if "uv run pytest" in block.body]
    assert block.skip and "ci/run" in block.skip  # the one block not run here: it is this suite
    ci = (TEMPLATE_ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '^uv run pytest' README.md" in ci
    assert block.body.strip().startswith("uv run pytest")


def test_first_line_installs_uv_on_a_plain_python_with_pip(tmp_path: Path) -> None:
    first = blocks(README)[0].body.splitlines()[0]
    env = clean_env({"HOME": str(tmp_path), "PATH": f"{base_python_bin()}{os.pathsep}/usr/bin:/bin"})
    result = subprocess.run(
        ["bash", "-ec", first], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / ".venvs" / "uv" / "bin" / "uvx").is_file()


@pytest.mark.anyio
async def test_top_readme_blocks_run_as_written_on_debians_python(tmp_path: Path) -> None:
    """Every runnable block, in order, in one terminal, on the system Python (PEP 668) with no uv on PATH."""
    debian = Path("/usr/bin/python3")
    with anyio.fail_after(120):
        refused = await anyio.run_process(
            [str(debian), "-m", "pip", "install", "--user", "uv"],
            env=clean_env({"HOME": str(tmp_path)}),
            check=False,
        )
    assert b"externally-managed-environment" in refused.stderr, "this test needs Debian's python3 (PEP 668)"
    home = tmp_path / "home"
    home.mkdir()
    template = await anyio.to_thread.run_sync(clean_clone, tmp_path / "template")
    env = clean_env(
        {
            "TEMPLATE": str(template),
            "HOME": str(home),
            "PATH": "/usr/bin:/bin",
            "UV_CACHE_DIR": await anyio.to_thread.run_sync(uv_cache),
            "UV_PYTHON_PREFERENCE": "only-system",
            # Runtime files outside the checkout, so the update block finds it clean (issue 12 item 9
            # makes .gitignore cover what the server writes; until then serve dirties the tree).
            "MCP_DATA_DIR": str(tmp_path / "data"),
            "MCP_FILES_ROOT": str(tmp_path / "data" / "files"),
        }
    )
    env.pop("MCP_TEMPLATE_SKIP_LOCK", None)  # the real thing: the task locks with uv
    terminal = Terminal(tmp_path, env, tmp_path)

    def call_whoami(port: int) -> None:
        env = read_env_file(tmp_path / "acme-tools")
        anyio.from_thread.run(whoami, f"http://127.0.0.1:{port}/mcp", client_key(env), key_holder(env))

    ran = 0
    for block in blocks(README):
        if block.lang not in EXECUTED or block.skip is not None:
            continue
        ran += 1
        if block.starts_server:
            port = free_port()
            serve = functools.partial(
                terminal.serve, block.body, port, while_up=functools.partial(call_whoami, port)
            )
            _, log = await anyio.to_thread.run_sync(serve)
            assert "Application shutdown complete" in log and "Traceback" not in log, log
        else:
            result = await anyio.to_thread.run_sync(terminal.run, block.body)
            assert result.returncode == 0, f"README line {block.line}:\n{result.stdout}{result.stderr}"
    assert ran >= 2
    project = tmp_path / "acme-tools"
    assert (project / "uv.lock").is_file() and (project / ".git").is_dir()
    assert (project / ".env").stat().st_mode & 0o777 == 0o600


def clean_clone(dest: Path) -> Path:
    """The template as a user's fresh clone has it: today's working tree, committed (tests render HEAD plus
    uncommitted changes; a copy from a dirty tree records a commit nobody can check out later)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=TEMPLATE_ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        source = TEMPLATE_ROOT / rel
        if source.is_file() and not source.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    for command in (
        ["init", "--quiet"],
        ["add", "--all"],
        ["-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "template"],
    ):
        subprocess.run(["git", *command], cwd=dest, check=True, capture_output=True)
    return dest


async def whoami(url: str, key: str, holder: str) -> None:
    async with http_client(url, key) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        text = text_of(await client.call_tool("whoami", {}))
    assert "whoami" in tools and f"principal: {holder}\n" in text


def test_copy_without_trust_and_tasks_works_after_keygen(tmp_path: Path) -> None:
    env = clean_env()
    copy = subprocess.run(
        [
            "uvx",
            "copier",
            "copy",
            "--defaults",
            "--skip-tasks",
            "--data",
            "project_name=No Trust",
            str(TEMPLATE_ROOT),
            "no-trust",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert copy.returncode == 0, copy.stdout + copy.stderr
    project = tmp_path / "no-trust"
    assert not (project / ".env").exists()
    readme = (project / "README.md").read_text()
    assert "keygen --write-env" in readme
    keygen = subprocess.run(
        ["uv", "run", "no-trust", "keygen", "--write-env"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert keygen.returncode == 0, keygen.stdout + keygen.stderr
    assert (project / ".env").stat().st_mode & 0o777 == 0o600
    check = subprocess.run(
        ["uv", "run", "no-trust", "check"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configuration is valid" in check.stdout


def test_copy_without_trust_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["uvx", "copier", "copy", "--defaults", "--data", "project_name=X", str(TEMPLATE_ROOT), "x"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert not (tmp_path / "x" / "src").exists()
