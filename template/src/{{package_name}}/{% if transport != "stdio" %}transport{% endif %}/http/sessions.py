"""Sessions for initialize-era HTTP clients, so that a destructive tool can ask the user (elicitation).

A 2024-11-05 to 2025-11-25 client has no way to answer a server's question without a session: the
question rides the SSE stream of its call, and the answer comes back as a POST of the same session.
`Sessions` gives such clients a session of the SDK's stateful manager when they `initialize` (and
accept SSE); every other request stays on the stateless path (SingleExchange), unchanged and fast.

Sessions are never authentication: every request is authenticated before it gets here. A session
belongs to the principal that opened it; another principal's `Mcp-Session-Id` gets exactly the 404 an
unknown id gets, and a security event. Bounded: MCP_MAX_SESSIONS overall (the SDK's 503),
MCP_MAX_SESSIONS_PER_PRINCIPAL, MCP_SESSION_IDLE_TIMEOUT_SECONDS (the SDK's idle timeout),
MCP_SESSION_MAX_STREAMS requests open at once per session, and a GET stream that carries nothing for
MCP_SESSION_STREAM_IDLE_SECONDS is closed. Without a session, GET and DELETE /mcp answer 405.

A principal at MCP_MAX_SESSIONS_PER_PRINCIPAL that opens another session ends its own least recently
used one (whose id then answers 404, and its client initializes again, as the protocol says), instead
of being refused: most clients never end their sessions when they restart, and refusing would lock their
owner out until the idle timeout. Only the principal's own sessions are ever ended. A slot is reserved
before the session exists, so concurrent initializes cannot open more than the cap.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Container

import anyio
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...security.audit.events import SecurityEvents
from ...security.identity.principal import principal_in
from ...security.perimeter.common import client_address, refusal, send_json
from ...server import sdk

_SESSION_HEADER = MCP_SESSION_ID_HEADER.encode()
# Byte for byte what the SDK answers for an unknown session id, so a refusal tells nothing more.
_NOT_FOUND = JSONRPCError(
    jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message="Session not found")
).model_dump_json(by_alias=True, exclude_unset=True)


class NoSessions:
    """Stateless HTTP for every client: GET and DELETE /mcp answer 405, everything else goes on."""

    def __init__(self, stateless: ASGIApp, path: str = "/mcp") -> None:
        self.stateless = stateless
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            session_id = next((v for k, v in scope["headers"] if k == _SESSION_HEADER), None)
            if session_id is not None:
                await self.in_session(session_id.decode("latin-1"), scope, receive, send)
                return
            if scope["method"] in ("GET", "DELETE"):
                # No session, so no stream to hold open and nothing to end.
                await send_json(
                    send,
                    405,
                    refusal("method_not_allowed", "GET and DELETE /mcp need a session; POST instead."),
                    {"Allow": "POST"},
                )
                return
        await self.stateless(scope, receive, send)

    async def in_session(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stateless(scope, receive, send)  # the stateless SDK app ignores the id


class Sessions(NoSessions):
    """Routes session traffic to the SDK's stateful manager, bound to the principal that opened it."""

    def __init__(
        self,
        stateless: ASGIApp,
        manager: StreamableHTTPSessionManager,
        events: SecurityEvents,
        *,
        per_principal: int,
        max_streams: int,
        stream_idle_seconds: float,
        path: str = "/mcp",
    ) -> None:
        if manager.stateless or manager.json_response:
            raise ValueError("Sessions needs a stateful manager that answers with SSE streams")
        super().__init__(stateless, path)
        self.manager = manager
        self.events = events
        self.per_principal = per_principal
        self.max_streams = max_streams
        self.stream_idle_seconds = stream_idle_seconds
        # Session id -> owner, least recently used first (moved to the end on each request).
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._streams: dict[str, int] = {}
        self._opening: dict[str, int] = {}  # principal -> sessions reserved, not yet opened

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with self.manager.run():
                await self.stateless(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _live(self) -> Container[str]:
        # The SDK's open sessions (it forgets one on DELETE, idle timeout or crash).
        return sdk.live_session_ids(self.manager)

    async def open(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve an initialize request with a new session (SingleExchange calls this)."""
        principal = _principal(scope)
        live = self._live()
        for session_id in [sid for sid in self._owners if sid not in live]:
            del self._owners[session_id]
        # From here to the reservation nothing awaits: concurrent initializes see each other's slots.
        owned = [sid for sid, owner in self._owners.items() if owner == principal]
        reserved = self._opening.get(principal, 0)
        if len(owned) + reserved >= self.per_principal and not owned:
            await self._too_many_sessions(send, scope, principal, reserved)  # every slot is opening right now
            return
        evicted = owned[0] if len(owned) + reserved >= self.per_principal else None
        if evicted is not None:
            del self._owners[evicted]
        self._opening[principal] = reserved + 1
        try:
            if evicted is not None:
                await self._end(evicted, scope, principal)
            await self._open_session(scope, receive, send, principal)
        finally:
            self._opening[principal] -= 1
            if not self._opening[principal]:
                del self._opening[principal]

    async def _end(self, session_id: str, scope: Scope, principal: str) -> None:
        """End the principal's least recently used session, to make room for its new one."""
        await self.events.record(
            "session_ended",
            "low",
            principal,
            reason="sessions per principal: least recently used ended for a new one",
            limit=self.per_principal,
            session=hashlib.sha256(session_id.encode()).hexdigest()[:12],
            client=client_address(scope),
        )
        await sdk.end_session(self.manager, session_id)

    async def _open_session(self, scope: Scope, receive: Receive, send: Send, principal: str) -> None:
        opened: dict[str, int | str] = {}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                opened["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == _SESSION_HEADER:
                        opened["id"] = value.decode("latin-1")
                        if opened["id"] in self._live():  # owned before its client can use it
                            self._owners[str(opened["id"])] = principal
            await send(message)

        await self.manager.handle_request(scope, receive, watch)
        if opened.get("status") == 503:
            await self.events.record(
                "rate_limit_exceeded",
                "high",
                principal,
                reason="sessions overall",
                client=client_address(scope),
            )

    async def _too_many_sessions(self, send: Send, scope: Scope, principal: str, opening: int) -> None:
        message = (
            f"This principal is opening {opening} sessions at once (MCP_MAX_SESSIONS_PER_PRINCIPAL); "
            "retry when they are open."
        )
        limit = ("sessions per principal", self.per_principal)
        await self._over_limit(send, scope, principal, "too_many_sessions", limit, message)

    async def _over_limit(
        self, send: Send, scope: Scope, principal: str, code: str, limit: tuple[str, int], message: str
    ) -> None:
        """One `rate_limit_exceeded` event (medium) naming the limit, then the 429 that names its setting."""
        reason, amount = limit
        await self.events.record(
            "rate_limit_exceeded",
            "medium",
            principal,
            reason=reason,
            limit=amount,
            client=client_address(scope),
        )
        await send_json(send, 429, refusal(code, message))

    async def in_session(self, session_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        principal = _principal(scope)
        owner = self._owners.get(session_id)
        if owner == principal:
            self._owners.move_to_end(session_id)  # the most recently used of its owner's sessions
        if owner is not None and owner != principal:
            await self.events.record(
                "authorization_denied",
                "high",
                principal,
                reason="session of another principal",
                session=hashlib.sha256(session_id.encode()).hexdigest()[:12],
                method=scope["method"],
                client=client_address(scope),
            )
            await _not_found(send)
            return
        open_streams = self._streams.get(session_id, 0)
        if open_streams >= self.max_streams:
            message = f"This session has {open_streams} requests open (MCP_SESSION_MAX_STREAMS)."
            limit = ("streams per session", self.max_streams)
            await self._over_limit(send, scope, principal, "too_many_streams", limit, message)
            return
        self._streams[session_id] = open_streams + 1
        try:
            if scope["method"] == "GET":
                await self._idle_bounded(scope, receive, send)
            else:
                await self.manager.handle_request(scope, receive, send)
        finally:
            self._streams[session_id] -= 1
            if self._streams[session_id] <= 0:
                del self._streams[session_id]
            if session_id not in self._live():
                self._owners.pop(session_id, None)

    async def _idle_bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The session's GET stream, ended once it has carried nothing but keep-alives for a while."""
        idle = self.stream_idle_seconds
        response = {"started": False, "ended": False}
        stream = anyio.CancelScope(deadline=anyio.current_time() + idle)

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["started"] = True
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body and not body.startswith(b":"):  # an SSE comment is a keep-alive ping
                    stream.deadline = anyio.current_time() + idle
                response["ended"] = not message.get("more_body", False)
            await send(message)

        with stream:
            await self.manager.handle_request(scope, receive, watched)
        if stream.cancelled_caught and response["started"] and not response["ended"]:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _principal(scope: Scope) -> str:
    principal = principal_in(scope)
    # Authentication runs first and sets it; "" can only own what an unauthenticated caller opened: nothing.
    return principal.id if principal is not None else ""


async def _not_found(send: Send) -> None:
    body = _NOT_FOUND.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
