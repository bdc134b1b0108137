"""Run a README's code blocks the way a user pastes them into one terminal.

The convention (README.md, "README code blocks"): fenced blocks tagged bash, sh, console or python are
executed; text, dotenv, yaml, json, toml, nginx and caddy are not (json, yaml and toml are parsed). A
pasteable block that cannot run here has `<!-- readme-test: skip (reason) -->` on the line before it.
Shell blocks share one session: exported variables and the working directory carry from block to block.
A block whose command starts a server (`... serve`, `... dev`) runs until the server answers /health, then
gets Ctrl-C (SIGINT to its process group), as a user stops it; a stdio server is sent an MCP request on its
stdin instead, and stopped by closing stdin (Ctrl-D), as a client does.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx2
import yaml

EXECUTED = {"bash", "sh", "console", "python"}
PARSED: dict[str, Callable[[str], object]] = {
    "json": json.loads,
    "yaml": yaml.safe_load,
    "toml": tomllib.loads,
}
# sql: the read-only database role, which tests/test_tools_records_own.py runs against PostgreSQL.
NOT_EXECUTED = {"text", "dotenv", "yaml", "json", "toml", "nginx", "caddy", "sql"}
FENCE = re.compile(
    r"^(?:<!-- readme-test: skip \((?P<skip>[^\n]+)\) -->\n)?```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
# A command that starts a server: `uv run <slug> serve` at the start of a line or after `&&`.
SERVES = re.compile(r"(?:^|&&)\s*(?:uv run|uvx)[^\n#&]*\s(?:serve|dev)\b(?![^\n#]*--cli)", re.MULTILINE)


@dataclass
class Block:
    lang: str
    body: str
    skip: str | None
    line: int

    @property
    def starts_server(self) -> bool:
        return self.lang in {"bash", "sh", "console"} and bool(SERVES.search(self.body))


def blocks(text: str) -> list[Block]:
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start("lang")) + 1
        found.append(Block(match["lang"].strip(), match["body"], match["skip"], line))
    return found


def convention_problems(text: str) -> list[str]:
    """Blocks with a tag outside the convention, and parsed blocks that do not parse."""
    problems = []
    for block in blocks(text):
        if block.lang not in EXECUTED | NOT_EXECUTED:
            problems.append(
                f"line {block.line}: block tagged {block.lang!r} (use one of the convention's tags)"
            )
        elif block.lang in PARSED and block.skip is None:
            try:
                PARSED[block.lang](block.body)
            except Exception as exc:  # noqa: BLE001 - report any parser's error with the line
                problems.append(f"line {block.line}: {block.lang} block does not parse: {exc}")
    return problems


def shell_text(block: Block) -> str:
    if block.lang != "console":
        return block.body
    return "".join(line[2:] + "\n" for line in block.body.splitlines() if line.startswith("$ "))


class Terminal:
    """One user's terminal: blocks run in bash, in order, keeping exported variables and the directory."""

    def __init__(self, cwd: Path, env: Mapping[str, str], state_dir: Path) -> None:
        self.env = dict(env)
        self.state = state_dir / "terminal-state.sh"
        self.state.write_text(f"cd {shq(str(cwd))}\n")
        self.log_dir = state_dir

    def script(self, body: str, port: int | None = None) -> str:
        # Save the session on exit, also after Ctrl-C stopped a server. A server block's port is its own:
        # set after the saved session is read, and not saved for the next block.
        save = f'{{ unset MCP_PORT; export -p; printf "cd %q\\n" "$PWD"; }} > {shq(str(self.state))}'
        serve = f"export MCP_PORT={port}\n" if port else ""
        return f"source {shq(str(self.state))}\n{serve}trap '{save}' EXIT\nset -eo pipefail\n{body}"

    def run(self, body: str, *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.script(body)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def serve(
        self, body: str, port: int, *, timeout: float = 300, while_up: Callable[[], None] | None = None
    ) -> tuple[int, str]:
        """Run a block that starts a server on `port`; when /health answers, run `while_up`, then Ctrl-C."""
        log = self.log_dir / f"serve-{port}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                ["bash", "-c", self.script(body, port)],
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise AssertionError(
                        f"the block ended ({process.returncode}) before serving:\n"
                        + log.read_text(errors="replace")
                    )
                try:
                    if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx2.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("no /health answer:\n" + log.read_text(errors="replace"))
                time.sleep(0.2)
            if while_up:
                while_up()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        return process.returncode, log.read_text(errors="replace")

    def serve_stdio(
        self, body: str, requests: list[dict[str, object]], *, timeout: float = 300
    ) -> tuple[int, list[dict[str, object]], str]:
        """Run a block that starts a stdio server: send `requests` (JSON-RPC lines) on its stdin, wait for
        the answer to the last one, then close stdin. (exit code, the JSON-RPC answers, everything else
        printed)."""
        process = subprocess.Popen(
            ["bash", "-c", self.script(body)],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert process.stdin is not None and process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in process.stdout or ():
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        answers: list[dict[str, object]] = []
        printed: list[str] = []
        last = requests[-1]["id"]
        try:
            process.stdin.write("".join(json.dumps(request) + "\n" for request in requests))
            process.stdin.flush()
            deadline = time.monotonic() + timeout
            while not any(answer.get("id") == last for answer in answers):
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise AssertionError("no answer on stdout:\n" + "".join(printed)) from None
                if line is None:
                    raise AssertionError(
                        f"the block ended ({process.wait()}) before answering:\n" + "".join(printed)
                    )
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if isinstance(message, dict) and message.get("jsonrpc") == "2.0":
                    answers.append(message)
                else:
                    printed.append(line)
            process.stdin.close()  # Ctrl-D: end of input stops a stdio server
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        while (line := lines.get(timeout=10)) is not None:
            printed.append(line)
        return code, answers, "".join(printed)


def shq(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
