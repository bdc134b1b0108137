"""The keys and the principal binding that seal 2026-07-28 `requestState`, and the audit of refusals.

A destructive tool asks a 2026-07-28 client for consent with an input-required result; the client
retries with the sealed `requestState`. The SDK seals and verifies it (`RequestStateSecurity`: AES-GCM,
expiry, binding to the request, the audience and the principal); this module gives it the keys from
MCP_REQUEST_STATE_KEYS, shared by every replica, binds the state to our principal, and writes one
security event for every retry the SDK refuses (tampered, expired, another principal's, foreign).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.request_state import RequestStateSecurity
from mcp.shared.exceptions import MCPError

from ..audit.events import AuditUnavailableError, SecurityEvents
from .request import caller, client_address

REFUSED_REASON = "invalid_request_state"


def request_state_security(keys: list[str], ttl: float, *, stdio: bool) -> RequestStateSecurity:
    """Shared keys when configured; else a key of this process only (one replica, or stdio).

    The state is bound to the caller the guard sees (`request.caller`): the local user only on stdio.
    """
    ring: list[str | bytes] = list(keys) or [os.urandom(32)]

    def bound_to(ctx: ServerRequestContext[Any, Any]) -> str | None:
        principal = caller(ctx.request, stdio=stdio)
        return principal.id if principal is not None else None

    return RequestStateSecurity(keys=ring, ttl=ttl, bind_principal=bound_to)


class RequestStateAudit:
    """Server middleware outside the SDK's request-state boundary: audits the retries it refuses."""

    def __init__(self, events: SecurityEvents, *, stdio: bool) -> None:
        self.events = events
        self._stdio = stdio

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        try:
            return await call_next(ctx)
        except MCPError as exc:
            data = exc.error.data
            if isinstance(data, dict) and data.get("reason") == REFUSED_REASON:
                await self._record(ctx)
            raise

    async def _record(self, ctx: ServerRequestContext[Any, Any]) -> None:
        params = ctx.params or {}
        target = params.get("name") if ctx.method != "resources/read" else params.get("uri")
        principal = caller(ctx.request, stdio=self._stdio)
        client = client_address(ctx.request, stdio=self._stdio)
        # Refused either way; a store failure is itself logged at critical level by SecurityEvents.
        with contextlib.suppress(AuditUnavailableError):
            await self.events.record(
                "input_validation_failed",
                "high",
                principal.id if principal is not None else client,
                tool=str(target)[:100] if ctx.method == "tools/call" else None,
                request_id=None if ctx.request_id is None else str(ctx.request_id),
                reason=REFUSED_REASON,
                method=ctx.method,
                client=client,
            )
