"""A request with both Content-Length and Transfer-Encoding is refused (400) and its connection closed.

h11 reads such a body as chunked and keeps the connection alive, while a proxy in front may have read
it by Content-Length: the two then disagree where the next request starts, and a request hidden in the
body (request smuggling) would be answered. RFC 9112 section 6.1 lets a server refuse it; closing the
connection drops whatever was pipelined behind it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..audit.events import SecurityEvents
from .common import client_address, refusal, send_json


class AmbiguousFraming:
    def __init__(self, app: ASGIApp, events: SecurityEvents) -> None:
        self.app = app
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = {name for name, _ in scope["headers"]}
        if b"transfer-encoding" not in names or b"content-length" not in names:
            await self.app(scope, receive, send)
            return
        await self.events.record(
            "http_error",
            "medium",
            client_address(scope),
            status=400,
            reason="both Content-Length and Transfer-Encoding",
            path=scope.get("path", "")[:200],
            anonymous=True,
        )
        message = "Send either Content-Length or Transfer-Encoding, not both."
        # Connection: close makes uvicorn close the connection after this answer.
        await send_json(send, 400, refusal("bad_request", message), {"Connection": "close"})
