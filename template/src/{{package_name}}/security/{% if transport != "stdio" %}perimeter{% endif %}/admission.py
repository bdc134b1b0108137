"""Body size limit and the pre-authentication rate limit per client address."""

from __future__ import annotations

from mcp.server.transport_security import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..events import SecurityEvents
from ..ratelimit import RateLimiter, RateLimitUnavailableError
from .common import client_address, refusal, send_json

UNLIMITED_PATHS = frozenset({"/health"})


class BodyLimit:
    """The SDK's body-size limit (413), with one security event per refusal."""

    def __init__(self, app: ASGIApp, max_bytes: int, events: SecurityEvents) -> None:
        self.limited = RequestBodyLimitMiddleware(app, max_bytes)
        self.max_bytes = max_bytes
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.limited(scope, receive, send)
            return

        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                await self.events.record(
                    "http_error",
                    "medium",
                    client_address(scope),
                    status=413,
                    reason="body too large",
                    limit_bytes=self.max_bytes,
                    path=scope["path"],
                )
            await send(message)

        await self.limited(scope, receive, audited_send)


class ClientRateLimit:
    """Limits every client address before authentication, so credential guessing is slowed too."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, limit: str, events: SecurityEvents) -> None:
        self.app = app
        self.limiter = limiter
        self.item = limiter.parse(limit)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        client = client_address(scope)
        try:
            decision = await self.limiter.hit(self.item, "address", client)
        except RateLimitUnavailableError:
            await self.events.record("rate_limit_exceeded", "high", client, reason="storage_down")
            await send_json(
                send,
                503,
                refusal("unavailable", "Rate limiting is unavailable, so requests are refused."),
                {"Retry-After": "5"},
            )
            return
        if not decision.allowed:
            await self.events.record(
                "rate_limit_exceeded",
                "medium",
                client,
                limit=str(self.item),
                scope="per-address",
                retry_after=decision.reset_after,
                path=scope["path"],
            )
            message = f"Rate limit {self.item} reached; retry after {decision.reset_after} seconds."
            await send_json(send, 429, refusal("rate_limited", message), decision.headers)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (name.lower().encode(), value.encode()) for name, value in decision.headers.items()
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
