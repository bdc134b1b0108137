"""Connection-level defences, below ASGI: caps on connections, read deadlines, audited malformed requests.

uvicorn (0.54, h11) holds a connection that never finishes its request for ever: its keep-alive timer
is armed only after a response, and any byte cancels it; `limit_concurrency` answers 503 to requests
but keeps every connection open. So a few hundred idle or slowly sent requests (slowloris) use up the
file descriptors while no request ever reaches a rate limit. This protocol adds, per connection:

- a deadline for the request line and headers (MCP_HEADER_TIMEOUT_SECONDS from the first byte, or
  from the connection for one that sends nothing) and one for the body (MCP_BODY_TIMEOUT_SECONDS);
- a cap per client address (MCP_MAX_CONNECTIONS_PER_ADDRESS; trusted proxies are exempt) and an
  overall cap (MCP_MAX_CONNECTIONS, lowered to what the descriptor limit leaves after a reserve);
- for a request h11 cannot parse, a 400 with the security headers, and an event.

A burst can still use up the descriptors before the caps see it: asyncio accepts up to `backlog`
connections at a time before any of them reaches this protocol. Then accept() fails with EMFILE, asyncio
pauses accepting for a second (the connections wait in the listen queue) and reports the failure once per
connection it could not accept: a few thousand tracebacks that stalled the server for seconds. The
loop's exception handler (`watch_accept_failures`) turns them into one log line and one event a second.

Every refusal writes an anonymous event (its source's budget applies, see events.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import resource
import signal
import socket
import time
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ...server.sdk import H11_METHODS, H11_STATE, UVICORN_SERVER_METHODS, UVICORN_SERVER_STATE
from ..audit.events import AuditUnavailableError, SecurityEvents
from .headers import BASE_HEADERS, HSTS

FD_RESERVE = 64  # descriptors kept for the audit store, the limiter, sandboxes, logs
ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message (selector_events.py)
_SAME_INTERRUPT_SECONDS = 1.0  # a second SIGINT this soon after the first is the same Ctrl-C
log = logging.getLogger(__name__)


class ConnectionLimits:
    """The shared state and settings of every guarded connection of one server."""

    def __init__(
        self,
        events: SecurityEvents,
        *,
        max_connections: int,
        max_per_address: int,
        header_timeout: float,
        body_timeout: float,
        exempt: frozenset[str] = frozenset(),
        tls: bool = False,
    ) -> None:
        if min(max_connections, max_per_address) < 1 or min(header_timeout, body_timeout) <= 0:
            raise ValueError("connection caps must be at least 1 and read timeouts above 0")
        self.events = events
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.exempt = exempt
        self.open = 0
        self.per_address: dict[str, int] = {}
        headers = {**BASE_HEADERS, **({"Strict-Transport-Security": HSTS} if tls else {})}
        self.error_headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self._pending: set[asyncio.Task[None]] = set()
        self.accept_failures = 0
        self._accept_reported_at = -1.0

    def connection_cap(self) -> int:
        """MCP_MAX_CONNECTIONS, or fewer if the descriptor limit would run out first (read each time:
        an operator may lower it on a running process)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - FD_RESERVE))

    def admit(self, address: str) -> str | None:
        """Take a slot for a new connection from `address`, or say why there is none."""
        if self.open >= self.connection_cap():
            return "server"
        held = self.per_address.get(address, 0)
        if address not in self.exempt and held >= self.max_per_address:
            return "address"
        self.open += 1
        self.per_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        held = self.per_address.get(address, 0) - 1
        if held > 0:
            self.per_address[address] = held
        else:
            self.per_address.pop(address, None)

    def record(self, event: str, severity: Any, address: str, **details: Any) -> None:
        """Record from a protocol callback (not a coroutine): in a task, kept until it is done."""
        task = asyncio.get_running_loop().create_task(self._record(event, severity, address, details))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record(self, event: str, severity: Any, address: str, details: dict[str, Any]) -> None:
        try:
            await self.events.record(event, severity, address, anonymous=True, **details)
        except AuditUnavailableError:
            log.critical("audit store failed; a connection refusal was not stored (see its log line)")

    def watch_accept_failures(self, loop: asyncio.AbstractEventLoop) -> None:
        """Report asyncio's accept() failures (descriptors used up) once a second, not once per connection."""
        previous = loop.get_exception_handler()

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == ACCEPT_FAILED:
                self._accept_failed(context.get("exception"))
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handle)

    def _accept_failed(self, exc: object) -> None:
        self.accept_failures += 1
        now = time.monotonic()
        if now - self._accept_reported_at < 1.0:
            return
        self._accept_reported_at = now
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.error(
            "cannot accept connections (%s; descriptor limit %s): new connections wait in the listen queue; "
            "raise `ulimit -n` or lower MCP_MAX_CONNECTIONS_PER_ADDRESS",
            exc,
            soft,
        )
        self.record(
            "http_error",
            "high",
            "server",
            status=503,
            reason="out of file descriptors: accepting paused for 1 s",
            limit=soft,
            failures=self.accept_failures,
        )

    def server(self, config: uvicorn.Config) -> uvicorn.Server:
        """uvicorn's server, with these limits watching its event loop's accept() failures, and one Ctrl-C
        delivered twice counted once."""
        limits = self

        class GuardedUvicorn(uvicorn.Server):
            relies_on = UVICORN_SERVER_METHODS + UVICORN_SERVER_STATE  # uvicorn's internals (server/sdk.py)
            _first_interrupt = -math.inf

            async def serve(self, sockets: list[socket.socket] | None = None) -> None:
                limits.watch_accept_failures(asyncio.get_running_loop())
                await super().serve(sockets)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                # uvicorn forces the exit on a second Ctrl-C, cutting the calls in flight short. Without
                # a terminal, `uv run` forwards the one Ctrl-C its process group already got, 200 ms
                # later: that is the same Ctrl-C. One pressed again after a second still forces.
                if sig == signal.SIGINT:
                    now = time.monotonic()
                    if now - self._first_interrupt < _SAME_INTERRUPT_SECONDS:
                        return
                    if not self.should_exit:
                        self._first_interrupt = now
                super().handle_exit(sig, frame)

        return GuardedUvicorn(config)

    def protocol(self) -> type[H11Protocol]:
        """The uvicorn protocol class to pass as `http=`, bound to these limits."""
        limits = self

        class GuardedH11Protocol(_GuardedH11Protocol):
            pass

        GuardedH11Protocol.limits = limits
        return GuardedH11Protocol


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines, caps and audited 400s of ConnectionLimits."""

    relies_on = H11_METHODS + H11_STATE  # uvicorn's internals (server/sdk.py)
    limits: ConnectionLimits
    _address = ""
    _admitted = False
    _deadline: asyncio.TimerHandle | None = None
    _reading: str | None = None  # "headers" or "body" while a deadline runs

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else "unknown"
        refused = self.limits.admit(self._address)
        if refused is not None:
            self._refuse_connection(refused)
            return
        self._admitted = True
        self._start_deadline("headers", self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        if self._admitted:
            self._admitted = False
            self.limits.release(self._address)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE and self.conn.trailing_data[0]:  # a request has begun: headers have a deadline
            if self._reading != "headers":
                self._start_deadline("headers", self.limits.header_timeout)
        elif state is h11.SEND_BODY:
            if self._reading != "body":
                self._start_deadline("body", self.limits.body_timeout)
        elif self._reading is not None:
            self._stop_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle between requests: uvicorn's keep-alive timer closes the connection.
        if self.conn.their_state is not h11.SEND_BODY:
            self._stop_deadline()

    def send_400_response(self, msg: str) -> None:
        # h11 could not parse the request: uvicorn's own 400 has no security headers and no event.
        self._stop_deadline()
        body = json.dumps({"error": "bad_request", "message": "The request is not valid HTTP/1.1."}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *self.limits.error_headers,
        ]
        try:
            output = self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
            output = (output or b"") + (self.conn.send(h11.Data(data=body)) or b"")
            output += self.conn.send(h11.EndOfMessage()) or b""
            self.transport.write(output)
        except h11.LocalProtocolError:
            pass  # a response had already begun: just close
        self.transport.close()
        self.limits.record(
            "http_error", "low", self._address, status=400, reason="malformed HTTP request", detail=msg[:100]
        )

    def _refuse_connection(self, why: str) -> None:
        body = b'{"error":"too_many_connections","message":"Too many open connections; retry shortly."}'
        head = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
        head += b"retry-after: 5\r\ncontent-length: " + str(len(body)).encode() + b"\r\n"
        head += b"".join(name + b": " + value + b"\r\n" for name, value in self.limits.error_headers)
        self.transport.write(head + b"\r\n" + body)
        self.transport.close()
        if why == "address":
            self.limits.record(
                "client_blocked",
                "medium",
                self._address,
                reason="too many connections from this address",
                limit=self.limits.max_per_address,
            )
        else:
            self.limits.record(
                "http_error",
                "high",
                self._address,
                status=503,
                reason="server connection cap reached",
                limit=self.limits.connection_cap(),
            )

    def _start_deadline(self, reading: str, seconds: float) -> None:
        self._stop_deadline()
        self._reading = reading
        self._deadline = self.loop.call_later(seconds, self._deadline_passed)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._reading = None

    def _deadline_passed(self) -> None:
        reading, self._deadline, self._reading = self._reading, None, None
        if self.transport.is_closing():
            return
        if reading == "headers" and self.conn.our_state is h11.IDLE:
            try:
                headers = [(b"content-length", b"0"), (b"connection", b"close"), *self.limits.error_headers]
                self.transport.write(self.conn.send(h11.Response(status_code=408, headers=headers)) or b"")
            except h11.LocalProtocolError:
                pass
        self.transport.close()
        limit = self.limits.header_timeout if reading == "headers" else self.limits.body_timeout
        self.limits.record(
            "http_error",
            "low",
            self._address,
            status=408,
            reason=f"request {reading} not received in time",
            timeout_seconds=limit,
        )
