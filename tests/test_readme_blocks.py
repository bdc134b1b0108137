"""Every block of a rendered README that a user would paste runs as written, in one terminal, in order.

Three renders, one test each: "both" (API keys, HTTP and stdio), "stdio" (every sample tool) and "oauth"
(tokens from node oidc-provider, configured the way the README's recipe for it says). The project's own
paths, keys and a free port are substituted; `npx @modelcontextprotocol/inspector@2.12.0` is the same
Inspector from node_modules/.bin (the README's Inspector lines use its CLI mode already: the UI mode the
text mentions needs a browser). `claude mcp add` is a stand-in (support/claude_code.py: Claude Code cannot
be installed here) that starts or connects to the server it is given, as Claude Code does. Blocks that
start an HTTP server run until it answers, then get Ctrl-C; a stdio server gets an MCP request on stdin,
then end of input. The blocks that call the server run against one started for them. The clients'
JSON configurations (Claude Desktop, VS Code, Cursor) are started with the real MCP client, as the
client would start them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client

from support import (
    ANSWER_SETS,
    TEMPLATE_ROOT,
    Venv,
    claude_code,
    client_key,
    free_port,
    jsonrpc,
    key_holder,
    package_of,
    read_env_file,
    render,
    running_server,
)
from support.node import NODE_BIN, node_env
from support.oidc import OidcProvider
from support.readme import EXECUTED, Terminal, blocks, convention_problems, shell_text

INSPECTOR = "npx -y @modelcontextprotocol/inspector@"
TOKEN_PLACEHOLDER = '"<an access token from your authorization server>"'


def pinned_inspector() -> str:
    return json.loads(
        (TEMPLATE_ROOT / "node_modules/@modelcontextprotocol/inspector/package.json").read_text()
    )["version"]


@pytest.mark.parametrize("answers", ["both", "http_all", "stdio", "oauth"])
def test_rendered_readme_follows_the_block_convention(answers: str, rendered: Callable[[str], Path]) -> None:
    readme = (rendered(answers) / "README.md").read_text()
    assert not convention_problems(readme)
    for block in blocks(readme):
        if INSPECTOR in block.body:
            assert f"{INSPECTOR}{pinned_inspector()} " in block.body  # the version the tests run


RUN_AS_WRITTEN = ("both", "stdio", "oauth")  # the renders whose READMEs the tests below execute


def test_every_answer_sets_runnable_blocks_are_among_those_executed(tmp_path: Path) -> None:
    """A block that only another answer set renders (http_all, http_none) would run in no test."""
    runnable: dict[str, set[str]] = {}
    for name, answers in ANSWER_SETS.items():
        project = render(answers, tmp_path / name, skip_tasks=True)
        command, package = package_of(project)
        runnable[name] = set()
        for block in blocks((project / "README.md").read_text()):
            if block.lang in EXECUTED and block.skip is None:
                text = shell_text(block).replace(command, "SLUG").replace(package, "PKG")
                # Shell blocks by command (a block of both lines' Inspector runs each one), Python as a whole.
                runnable[name] |= (
                    {text} if block.lang == "python" else set(text.replace("\\\n", "").splitlines())
                )
    executed = set().union(*(runnable[name] for name in RUN_AS_WRITTEN))
    for name, found in runnable.items():
        assert found <= executed, (name, found - executed)


@dataclass
class User:
    """A user with a fresh copy of one render, in one terminal."""

    project: Path
    command: str
    terminal: Terminal
    tmp: Path

    @property
    def readme(self) -> str:
        return (self.project / "README.md").read_text()

    def substitutions(self, port: int | None) -> dict[str, str]:
        found = {
            f"{INSPECTOR}{pinned_inspector()}": str(NODE_BIN / "mcp-inspector"),
            f"/path/to/{self.command}": str(self.project),
        }
        if port:
            found["127.0.0.1:8000"] = f"127.0.0.1:{port}"
        return found

    def run_blocks(self, substitutions: dict[str, str], *, stdio_serve: bool = False) -> str:
        """Every executed block in order; what they printed. A block that fails fails the test."""
        outputs: list[str] = []
        for block in blocks(self.readme):
            if block.lang not in EXECUTED or block.skip is not None:
                continue
            text = shell_text(block)
            for old, new in substitutions.items():
                text = text.replace(old, new)
            if block.lang == "python":
                (self.project / "call.py").write_text(text)
                text = "uv run python call.py"
            where = f"README line {block.line}:\n{text}\n"
            if block.starts_server and stdio_serve:
                code, answers, printed = self.terminal.serve_stdio(text, STDIO_REQUESTS)
                assert code == 0 and "Traceback" not in printed, where + printed
                outputs.append(printed + json.dumps(answers))
            elif block.starts_server:
                code, log = self.terminal.serve(text, free_port())
                assert "Application shutdown complete" in log and "Traceback" not in log, where + log
                outputs.append(log)
            else:
                result = self.terminal.run(text)
                (self.project / "call.py").unlink(
                    missing_ok=True
                )  # the user's scratch file, not the project's
                assert result.returncode == 0, where + result.stdout + result.stderr
                outputs.append(result.stdout)
        return "\n".join(outputs)

    def client_configs(self) -> list[dict[str, Any]]:
        """The servers of the JSON client configurations under "Connect a client"."""
        section = self.readme.split("## Connect a client", 1)[1].split("\n## ", 1)[0]
        found = []
        for block in blocks(section):
            if block.lang == "json":
                data = json.loads(block.body)
                found.extend((data.get("mcpServers") or data.get("servers")).values())
        return found


@pytest.fixture
def user(request: pytest.FixtureRequest, rendered: Callable[[str], Path], tmp_path: Path) -> User:
    answers = request.param
    project = tmp_path / f"acme-{answers}"
    shutil.copytree(rendered(answers), project, symlinks=True)
    command, _ = package_of(project)
    env = node_env(
        {"HOME": str(tmp_path), "MCP_DATA_DIR": str(tmp_path / "data"), "UV_CACHE_DIR": uv_cache()}
    )
    claude_code.install(tmp_path / "bin")
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    env.pop("VIRTUAL_ENV", None)
    return User(project, command, Terminal(project, env, tmp_path), tmp_path)


STDIO_REQUESTS: list[dict[str, Any]] = [
    jsonrpc(
        "initialize",
        {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "a user's terminal", "version": "0"},
        },
        id=1,
    ),
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    jsonrpc("tools/list", id=2),
]


@pytest.mark.parametrize("user", ["both"], indirect=True)
def test_the_both_readme_runs_as_written(user: User, venv: Venv) -> None:
    with running_server(
        venv,
        user.project,
        {**read_env_file(user.project), "MCP_DATA_DIR": str(user.tmp / "bg")},
        log_dir=user.tmp,
    ) as server:
        joined = user.run_blocks(user.substitutions(server.port))
        key = client_key(read_env_file(user.project))
        http_configs_answer(user, server.port, key)
    stdio_configs_answer(user, {"whoami"})
    assert '"name":"whoami"' in joined.replace(" ", "")  # curl tools/list
    # The Python script's call, printed as a repr (its newline escaped).
    assert f"principal: {key_holder(read_env_file(user.project))}\\n" in joined
    assert '"events":' in joined  # the audit trail, read with the admin key
    assert (
        joined.count("whoami") >= 5
    )  # ... and both Inspector lines and both `claude mcp add` listed the tool


@pytest.mark.parametrize("user", ["stdio"], indirect=True)
def test_the_stdio_readme_runs_as_written(user: User) -> None:
    tools = set(json.loads((user.project / "tools.lock.json").read_text())["tools"])
    joined = user.run_blocks(user.substitutions(None), stdio_serve=True)
    assert "security report" in joined  # `check` in "Run it" ...
    assert '"id": 2, "result": {"tools": [' in joined  # ... and `serve` answered tools/list on stdout
    assert "Added MCP server acme-stdio" in joined  # `claude mcp add ... -- uv run --directory ...`
    assert all(joined.count(tool) >= 3 for tool in tools), (
        joined
    )  # serve, the Inspector and Claude Code listed
    assert "alice:sha256:" in joined  # keygen --name
    stdio_configs_answer(user, tools)


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcProvider]:
    provider = OidcProvider().start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.mark.parametrize("user", ["oauth"], indirect=True)
def test_the_oauth_readme_runs_as_written(user: User, venv: Venv, oidc: OidcProvider) -> None:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    # The user puts the README's recipe for oidc-provider into .env, with their issuer and URL.
    recipe = (
        user.readme.split("**node oidc-provider**", 1)[1].split("```dotenv\n", 1)[1].split("# only", 1)[0]
    )
    recipe = recipe.replace("https://auth.example.com", oidc.issuer).replace(
        "https://mcp.example.com/mcp", resource
    )
    with (user.project / ".env").open("a") as env_file:
        env_file.write(recipe)
    token = oidc.client_credentials("machine", resource, "notes:read notes:write")["access_token"]
    substitutions = {**user.substitutions(port), TOKEN_PLACEHOLDER: token}
    with running_server(
        venv,
        user.project,
        {**read_env_file(user.project), "MCP_DATA_DIR": str(user.tmp / "bg")},
        port=port,
        log_dir=user.tmp,
    ) as server:
        joined = user.run_blocks(substitutions)
        http_configs_answer(user, server.port, token)
    assert "security report" in joined and "not asked" not in joined  # `check` asked the issuer
    assert '"name":"add_note"' in joined.replace(" ", "")  # curl tools/list with the token
    assert "principal: client:machine" in joined  # the Python script's call
    assert '"events":' in joined  # the audit trail, read with the admin key
    assert joined.count("whoami") >= 4  # ... and the Inspector and `claude mcp add` listed the tools


def stdio_configs_answer(user: User, tools: set[str]) -> None:
    """Claude Desktop's, VS Code's and Cursor's stdio entries start the server from another directory."""
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH"
    configs = [
        config for config in user.client_configs() if "command" in config and "serve" in config["args"]
    ]
    assert len(configs) == 3, configs
    for config in configs:
        assert config["command"] == "uv"  # README: put the absolute path of uv here (Claude Desktop)
        args = [
            arg.replace(f"/path/to/{user.command}", str(user.project)).replace(
                "${workspaceFolder}", str(user.project)
            )
            for arg in config["args"]
        ]
        # The client's own small environment (as the SDK's client builds it), the config's env, and the
        # uv cache the test shares.
        env = {**get_default_environment(), **config.get("env", {}), "UV_CACHE_DIR": uv_cache()}
        params = StdioServerParameters(command=uv, args=args, env=env, cwd=user.tmp)
        listed = run_client(params)
        assert tools <= listed, (config, listed)


def http_configs_answer(user: User, port: int, secret: str) -> None:
    """VS Code's and Cursor's HTTP entries reach the server, with the header they configure."""
    configs = [config for config in user.client_configs() if "url" in config]
    assert len(configs) == 2, configs
    for config in configs:
        url = config["url"].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        headers = {
            name: re.sub(r"\$\{(input|env):[^}]+\}", secret, value)
            for name, value in config["headers"].items()
        }
        assert "whoami" in run_client(url, headers), config


def run_client(params: StdioServerParameters | str, headers: dict[str, str] | None = None) -> set[str]:
    import anyio

    async def listed() -> set[str]:
        if isinstance(params, str):
            async with (
                httpx2.AsyncClient(headers=headers, timeout=60) as http,
                Client(streamable_http_client(params, http_client=http)) as client,
            ):
                return {tool.name for tool in (await client.list_tools()).tools}
        async with Client(params) as client:
            return {tool.name for tool in (await client.list_tools()).tools}

    return anyio.run(listed)


def uv_cache() -> str:
    return subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
