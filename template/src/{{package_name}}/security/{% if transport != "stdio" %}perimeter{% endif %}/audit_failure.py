"""When the audit store fails, a refusal cannot be recorded: answer 503, not a 500 with a traceback.

The layer inside has already refused (or not yet run) the work; the event was logged at CRITICAL
as a JSON line marked `"stored": false`. Clients are told to retry once the store is back.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..audit.events import AuditUnavailableError
from .common import refusal, send_json


class AuditFailureResponse:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except AuditUnavailableError:
            if started:
                raise
            await send_json(
                send,
                503,
                refusal("unavailable", "The audit trail is unavailable, so requests are refused."),
                {"Retry-After": "5"},
            )
