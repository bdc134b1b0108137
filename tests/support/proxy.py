"""A reverse proxy that adds request headers: test code only, for clients that cannot send them.

The MCP conformance suite cannot send an Authorization header, and the rendered server has (and gets)
no unauthenticated mode, so the suite talks to this proxy, which forwards every request unchanged
(method, path, Host, Origin, body) plus the headers it was given, and streams the answer back
unchanged (SSE included). Run it as a process: `python -m support.proxy --port P --upstream URL
--header "Authorization: Bearer KEY"`; `running_proxy()` does that and waits until it listens.
Given several upstreams (`--upstream` again), it is a plain round-robin load balancer: each request
goes to the next one, with no stickiness at all.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from support import stop_process

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",  # recomputed by each side
}


class HeaderProxy:
    """ASGI app: forward to `upstream` (scheme://host:port) with `extra` headers added."""

    def __init__(self, upstream: str | Sequence[str], extra: Sequence[tuple[str, str]]) -> None:
        self.upstreams = (
            [upstream.rstrip("/")] if isinstance(upstream, str) else [u.rstrip("/") for u in upstream]
        )
        self.turn = 0
        self.extra = [(name.lower().encode(), value.encode()) for name, value in extra]
        self.replaced = {name for name, _ in self.extra}
        self.client: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP and k not in self.replaced]
        upstream = self.upstreams[self.turn % len(self.upstreams)]
        self.turn += 1
        url = upstream + scope["raw_path"].decode()
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        request = self.client.build_request(scope["method"], url, headers=headers + self.extra, content=body)
        response = await self.client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        import httpx2

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # No default headers of its own, no timeout: SSE streams stay open as long as either side.
                self.client = httpx2.AsyncClient(timeout=None, headers={})
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


@contextlib.contextmanager
def running_proxy(
    port: int, upstream: str | Sequence[str], headers: dict[str, str], log: Path
) -> Iterator[str]:
    """Run the proxy on 127.0.0.1:port until the block ends; yields its base URL."""
    args = [sys.executable, "-m", "support.proxy", "--port", str(port)]
    for one in [upstream] if isinstance(upstream, str) else upstream:
        args += ["--upstream", one]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    with log.open("wb") as handle:
        process = subprocess.Popen(
            args,
            cwd=Path(__file__).parents[1],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"proxy exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"proxy did not listen within 30s:\n{log.read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", action="append", required=True)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    extra = [tuple(part.strip() for part in header.split(":", 1)) for header in args.header]
    app = HeaderProxy(args.upstream, extra)  # type: ignore[arg-type]
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        server_header=False,
        date_header=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
