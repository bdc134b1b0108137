"""What the limiter benchmarks share: a rendered, installed project, the machine, docs/benchmarks.md.

The benchmarks use the test helpers (tests/support) to render and serve the project for real.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import BASE, Venv, make_venv, render, set_task_env  # noqa: E402 (tests/ is on sys.path from here)

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "Rate limiting"


def project(workdir: Path) -> tuple[Venv, Path]:
    """Render "Acme Bench" (its own package name) and install it into a venv
    (MCP_TEMPLATE_TEST_VENV reuses one)."""
    set_task_env("MCP_TEMPLATE_SKIP_LOCK", "1")
    venv = make_venv(Path(os.environ.get("MCP_TEMPLATE_TEST_VENV") or workdir / "venv"))
    answers = {
        **BASE,
        "project_name": "Acme Bench",
        "transport": "http",
        "auth": "api_key",
        "sample_tools": [],
    }
    dest = render(answers, workdir / "project")
    venv.install(dest)
    return venv, dest


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="limiter-bench-")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()} ({datetime.now(UTC):%Y-%m-%d})"
    )


def write_section(title: str, body: str) -> None:
    """Replace (or add) `## title` in docs/benchmarks.md, keeping the other sections."""
    text = DOCS.read_text()
    block = f"## {title}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", flags=re.MULTILINE | re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    DOCS.write_text(text.rstrip("\n") + "\n")
    print(f"wrote {DOCS.relative_to(ROOT)}: ## {title}")


def write_subsection(title: str, body: str) -> None:
    """Replace (or add) `### title` under `## Rate limiting` in docs/benchmarks.md, keeping the rest."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if f"\n## {SECTION}\n" not in f"\n{text}":
        text = text.rstrip("\n") + f"\n\n## {SECTION}\n\n"
    head, _, rest = text.partition(f"## {SECTION}\n")
    next_section = re.search(r"^## ", rest, flags=re.MULTILINE)
    section, tail = (
        (rest[: next_section.start()], rest[next_section.start() :]) if next_section else (rest, "")
    )
    block = f"### {title}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^### {re.escape(title)}\n.*?(?=^### |\Z)", flags=re.MULTILINE | re.DOTALL)
    section = (
        pattern.sub(lambda _: block, section)
        if pattern.search(section)
        else section.rstrip("\n") + "\n\n" + block
    )
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(head + f"## {SECTION}\n" + "\n" + section.strip("\n") + "\n\n" + tail.lstrip("\n"))
    print(f"wrote {DOCS.relative_to(ROOT)}: ## {SECTION} / ### {title}")


class RawHttp:
    """Keep-alive HTTP/1.1 connections with very little client overhead, so the server is what is measured.

    `run` sends (port, raw request) pairs from a queue, in order, over `connections` concurrent
    workers; each worker keeps one connection per port. Returns the status of each request.
    """

    async def run(self, requests: list[tuple[int, bytes]], connections: int) -> list[int]:
        statuses: list[int] = [0] * len(requests)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(requests)):
            queue.put_nowait(index)

        async def worker() -> None:
            open_: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
            try:
                while True:
                    try:
                        index = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    port, raw = requests[index]
                    if port not in open_:
                        open_[port] = await asyncio.open_connection("127.0.0.1", port)
                    reader, writer = open_[port]
                    writer.write(raw)
                    await writer.drain()
                    statuses[index] = await _read_response(reader)
            finally:
                for _, writer in open_.values():
                    writer.close()

        await asyncio.gather(*(worker() for _ in range(connections)))
        return statuses


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


def post_request(port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        "POST /mcp HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        "Accept: application/json, text/event-stream",
        "Mcp-Protocol-Version: 2025-11-25",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
