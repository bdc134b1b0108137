"""A stand-in for Claude Code's `claude mcp add`, for the README tests: Claude Code itself cannot be
installed here (it is not among the repository's pinned npm tools and needs an account to run).

It reads the arguments the way Claude Code documents them (`claude mcp add [options] <name>
<commandOrUrl> [args...]`, options `-t/--transport stdio|http`, `-H/--header "Name: value"`,
`-e/--env NAME=value`, `-s/--scope`; everything after `--` belongs to the server's command), then does
what Claude Code does with the entry when a session starts: it starts the stdio command (or connects to
the URL with the headers) with the real MCP client and lists the tools. Anything it cannot read, or a
server that does not answer, exits non-zero, so a wrong README line fails its test.

`install(bin_dir)` writes a `claude` executable into bin_dir that runs this file.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

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


def main() -> int:
    options, positional = parse(sys.argv[1:])
    tools = asyncio.run(list_tools(options, positional))
    print(f"Added MCP server {positional[0]} (stand-in for Claude Code); its tools: {', '.join(tools)}")
    return 0 if tools else 1


if __name__ == "__main__":
    sys.exit(main())
