"""A stand-in for Claude Code's `claude mcp add`, for the README tests: Claude Code itself cannot be
installed here (it is not among the repository's pinned npm tools and needs an account to run).

It reads the arguments the way Claude Code documents them (`claude mcp add [options] <name>
<commandOrUrl> [args...]`, options `-t/--transport stdio|http`, `-H/--header "Name: value"`,
`-e/--env NAME=value`, `-s/--scope`; everything after `--` belongs to the server's command), then does
what Claude Code does with the entry when a session starts: it starts the stdio command (or connects to
the URL with the headers) with the real MCP client and lists the tools. Anything it cannot read, or a
server that does not answer, exits non-zero, so a wrong README line fails its test.

`claude mcp list` does what Claude Code's health check does with the servers of the user scope
(`mcpServers` in ~/.claude.json, the file `<command> install claude-code` writes): it expands `${VAR}`
and `${VAR:-default}` in command, args, env, url and headers from the environment, as Claude Code
documents for its MCP configuration, connects to each with the real MCP client and prints
`<name>: ... - Connected` or `- Failed to connect`, with the tools it listed.

`install(bin_dir)` writes a `claude` executable into bin_dir that runs this file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

OPTIONS = {
    "-t": "transport",
    "--transport": "transport",
    "-H": "header",
    "--header": "header",
    "-e": "env",
    "--env": "env",
    "-s": "scope",
    "--scope": "scope",
}


def install(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "claude"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} "$@"\n')
    path.chmod(0o755)
    return path


def parse(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    if argv[:2] != ["mcp", "add"]:
        raise SystemExit(f"this stand-in knows only `claude mcp add`, not {' '.join(argv[:2])!r}")
    options: dict[str, list[str]] = {"transport": [], "header": [], "env": [], "scope": []}
    positional: list[str] = []
    words = iter(argv[2:])
    for word in words:
        if word == "--":
            positional.extend(words)
        elif word in OPTIONS:
            value = next(words, None)
            if value is None:
                raise SystemExit(f"option {word} needs a value")
            options[OPTIONS[word]].append(value)
        elif word.startswith("-"):
            raise SystemExit(f"unknown option {word!r}")
        else:
            positional.append(word)
    if len(positional) < 2:
        raise SystemExit("usage: claude mcp add [options] <name> <commandOrUrl> [args...]")
    return options, positional


async def list_tools(options: dict[str, list[str]], positional: list[str]) -> list[str]:
    transport = (options["transport"] or ["stdio"])[-1]
    if transport == "http":
        headers = dict(header.split(":", 1) for header in options["header"])
        import httpx2

        async with (
            httpx2.AsyncClient(
                headers={k.strip(): v.strip() for k, v in headers.items()}, timeout=60
            ) as http,
            Client(streamable_http_client(positional[1], http_client=http)) as client,
        ):
            return [tool.name for tool in (await client.list_tools()).tools]
    if transport != "stdio":
        raise SystemExit(f"transport {transport!r}: this stand-in knows stdio and http")
    env = {**os.environ, **dict(item.split("=", 1) for item in options["env"])}
    # Claude Code starts the server in the directory it was started in, passing its own environment on.
    params = StdioServerParameters(command=positional[1], args=positional[2:], env=env, cwd=Path.cwd())
    async with Client(params) as client:
        return [tool.name for tool in (await client.list_tools()).tools]


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(value: Any) -> Any:
    """Claude Code's ${VAR} and ${VAR:-default} in a configuration value (an unset one stays as written)."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: os.environ.get(m.group(1), m.group(2) or m.group(0)), value)
    if isinstance(value, list):
        return [expand(item) for item in value]
    if isinstance(value, dict):
        return {key: expand(item) for key, item in value.items()}
    return value


async def configured_tools(entry: dict[str, Any]) -> list[str]:
    entry = expand(entry)
    if entry.get("type") == "http":
        options = {
            "transport": ["http"],
            "header": [f"{k}: {v}" for k, v in entry.get("headers", {}).items()],
        }
        return await list_tools({**options, "env": []}, ["", entry["url"]])
    if entry.get("type", "stdio") != "stdio":
        raise SystemExit(f"type {entry['type']!r}: this stand-in knows stdio and http")
    env = [f"{k}={v}" for k, v in entry.get("env", {}).items()]
    return await list_tools(
        {"transport": ["stdio"], "header": [], "env": env}, ["", entry["command"], *entry.get("args", [])]
    )


def list_servers() -> int:
    path = Path.home() / ".claude.json"
    servers = json.loads(path.read_text()).get("mcpServers", {}) if path.exists() else {}
    failed = 0
    for name, entry in servers.items():
        try:
            tools = asyncio.run(configured_tools(entry))
            print(
                f"{name}: {entry.get('url') or entry.get('command')} - Connected; tools: {', '.join(tools)}"
            )
        except Exception as exc:  # noqa: BLE001 - reported as Claude Code does, and counted
            failed += 1
            print(f"{name}: {entry.get('url') or entry.get('command')} - Failed to connect ({exc!r})")
    return 1 if failed or not servers else 0


def main() -> int:
    if sys.argv[1:3] == ["mcp", "list"]:
        return list_servers()
    options, positional = parse(sys.argv[1:])
    tools = asyncio.run(list_tools(options, positional))
    print(f"Added MCP server {positional[0]} (stand-in for Claude Code); its tools: {', '.join(tools)}")
    return 0 if tools else 1


if __name__ == "__main__":
    sys.exit(main())
