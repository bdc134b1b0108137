"""One `http_error` event for each request the MCP app itself refuses (bad JSON, wrong method or path...).

Sits just outside authentication. Answers that a perimeter layer already recorded are skipped, so
each refusal is recorded once: 401/403 (authentication, scope, origin), 413 (body size), 429/503
(rate limits, blocked clients, stores down).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..audit.events import SecurityEvents
from ..identity.principal import principal_in
from .common import client_address, status_of

RECORDED_ELSEWHERE = frozenset({401, 403, 413, 429, 503})


class HttpErrorAudit:
    def __init__(self, app: ASGIApp, events: SecurityEvents) -> None:
        self.app = app
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = await status_of(self.app, scope, receive, send)
        if status >= 400 and status not in RECORDED_ELSEWHERE:
            principal = principal_in(scope)
            await self.events.record(
                "http_error",
                "low" if status < 500 else "high",
                principal.id if principal is not None else client_address(scope),
                status=status,
                method=scope.get("method", ""),
                path=scope.get("path", "")[:200],
                client=client_address(scope),
                anonymous=principal is None,
            )
