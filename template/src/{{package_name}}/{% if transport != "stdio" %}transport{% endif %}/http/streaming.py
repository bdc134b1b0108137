"""2026-07-28 requests that ask for notifications get an answer that can carry them.

Stateless requests are answered with one JSON body (the fast path, app.py), which has no room for the
progress and log notifications a tool sends while it runs (the guard's Notify). A 2026-07-28 request
asks for them in its `_meta` (`progressToken`, or the log-level opt-in) and accepts SSE: that request
goes to the SDK's own single-exchange entry in its SSE mode, which answers JSON all the same unless a
notification is sent before the result. Every other request takes the JSON path unchanged.
"""

from __future__ import annotations

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Receive, Scope, Send

from ...security.perimeter.common import replay_body
from ...server import sdk

_VERSION = b"mcp-protocol-version"
# What a request body holds when it asks for notifications (a cheap test before any parsing; a false
# match only costs the SSE mode's sibling task, and its answer is the same).
_ASKS = (b'"progressToken"', f'"{LOG_LEVEL_META_KEY}"'.encode())


class NotifyingRequests:
    """ASGI layer: a 2026-07-28 POST that asks for notifications and accepts SSE goes to the SDK's own
    single-exchange entry in its SSE mode; everything else passes through unchanged."""

    def __init__(self, app: ASGIApp, manager: StreamableHTTPSessionManager, path: str = "/mcp") -> None:
        self.app = app
        self.manager = manager
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._modern_sse_post(scope):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:  # the body size limit (an outer layer) already bounds it
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, replay_body(bytes(body), receive), send)
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        replay = replay_body(bytes(body), receive)
        if not any(ask in body for ask in _ASKS):
            await self.app(scope, replay, send)
            return
        manager = self.manager
        await sdk.handle_modern_request(
            manager.app, manager.security_settings, False, sdk.lifespan_state(manager), scope, replay, send
        )

    def _modern_sse_post(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return False
        headers = dict(scope["headers"])
        version = headers.get(_VERSION)
        return (
            version is not None
            and version.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS
            and b"text/event-stream" in headers.get(b"accept", b"")
        )
