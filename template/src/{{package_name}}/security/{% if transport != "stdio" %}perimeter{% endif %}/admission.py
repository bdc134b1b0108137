"""Body size limit, the pre-authentication limit per client address, and the per-principal limit."""

from __future__ import annotations

from limits import RateLimitItem
from mcp.server.transport_security import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..audit.events import SecurityEvents
from ..identity.principal import principal_in
from ..limits import PRINCIPAL_COUNTED, Decision, RateLimiter, RateLimitUnavailableError
from .common import authenticated, client_address, refusal, refuse_unless_authenticated, send_json

UNLIMITED_PATHS = frozenset({"/health"})
# A failed authentication (401) and the block's own refusal (429) are counted by blocking.py.
COUNTED_BY_THE_FAILURE_BLOCK = frozenset({401, 429})


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
                    anonymous=True,
                )
            await send(message)

        await self.limited(scope, receive, audited_send)


class ClientRateLimit:
    """The pre-authentication limit per client address, for what does not end authenticated.

    It counts the requests from an address that end neither authenticated nor with a failed
    authentication (403, public documents); failed authentications are counted by the failure
    block (blocking.py), so a failing address holds one counter, not two. Authenticated requests
    count against their principal instead (PrincipalRateLimit), so many users behind one address
    do not share one budget. When an address has spent its budget, a valid credential from it is
    still served (keys are 256-bit: admitting one tells a guesser nothing); anything else gets 429.

    The window is fixed (N per minute from an address's first such request): one counter per
    address keeps memory small when an attacker uses 100,000 addresses.
    """

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
            spent = await self.limiter.peek(self.item, "address", client, window="fixed")
        except RateLimitUnavailableError:
            await _unavailable(send, self.events, client, "per-address")
            return
        if not spent.allowed:

            async def too_many() -> None:
                await self._too_many(send, client, spent, scope["path"])

            await refuse_unless_authenticated(self.app, scope, receive, send, too_many)
            return
        replaced = False

        async def counted_send(message: Message) -> None:
            nonlocal replaced
            if (
                message["type"] == "http.response.start"
                and not authenticated(scope)
                and message["status"] not in COUNTED_BY_THE_FAILURE_BLOCK
            ):
                # The request did not end authenticated: it takes one of the address's slots.
                try:
                    decision = await self.limiter.hit(self.item, "address", client, window="fixed")
                except RateLimitUnavailableError:
                    replaced = True
                    await _unavailable(send, self.events, client, "per-address")
                    return
                if not decision.allowed:  # others from this address took the last slot meanwhile
                    replaced = True
                    await self._too_many(send, client, decision, scope["path"])
                    return
                _add_headers(message, decision)
            elif message["type"] == "http.response.body" and replaced:
                return
            await send(message)

        await self.app(scope, receive, counted_send)

    async def _too_many(self, send: Send, client: str, decision: Decision, path: str) -> None:
        await _too_many(send, self.events, client, self.item, decision, "per-address", path)


class PrincipalRateLimit:
    """MCP_RATE_LIMIT per authenticated principal, on every request, whichever replica serves it.

    Sits inside the authentication layer. It marks the request as counted, so the guard does not
    count the same tools/call again (the guard still counts on stdio, which has no perimeter).
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter, limit: str, events: SecurityEvents) -> None:
        self.app = app
        self.limiter = limiter
        self.item = limiter.parse(limit)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_in(scope)
        if scope["type"] != "http" or principal is None:
            await self.app(scope, receive, send)
            return
        try:
            decision = await self.limiter.hit(self.item, "principal", principal.id)
        except RateLimitUnavailableError:
            await _unavailable(send, self.events, principal.id, "per-client")
            return
        if not decision.allowed:
            await _too_many(send, self.events, principal.id, self.item, decision, "per-client", scope["path"])
            return
        scope["state"][PRINCIPAL_COUNTED] = True

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, decision)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_headers(message: Message, decision: Decision) -> None:
    message["headers"] = list(message.get("headers", [])) + [
        (name.lower().encode(), value.encode()) for name, value in decision.headers.items()
    ]


async def _too_many(
    send: Send,
    events: SecurityEvents,
    identifier: str,
    item: RateLimitItem,
    decision: Decision,
    scope_name: str,
    path: str,
) -> None:
    await events.record(
        "rate_limit_exceeded",
        "medium",
        identifier,
        limit=str(item),
        scope=scope_name,
        retry_after=decision.reset_after,
        path=path,
        anonymous=scope_name == "per-address",
    )
    message = f"Rate limit {item} reached; retry after {decision.reset_after} seconds."
    await send_json(send, 429, refusal("rate_limited", message), decision.headers)


async def _unavailable(send: Send, events: SecurityEvents, identifier: str, scope_name: str) -> None:
    # Fail closed: without a working limiter, nobody gets unlimited access.
    await events.record(
        "rate_limit_exceeded",
        "high",
        identifier,
        reason="storage_down",
        scope=scope_name,
        anonymous=scope_name == "per-address",
    )
    await send_json(
        send,
        503,
        refusal("unavailable", "Rate limiting is unavailable, so requests are refused; try again shortly."),
        {"Retry-After": "5"},
    )
