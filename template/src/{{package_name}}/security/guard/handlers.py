"""The MCP methods the guard answers itself, after the pipeline admitted them.

completion/complete runs the author's completer for one argument, bounded; resources/subscribe and
unsubscribe keep a session's subscriptions (subscriptions.py); logging/setLevel is in notify.py.
"""

from __future__ import annotations

import logging
import typing
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmptyResult,
    PromptReference,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)

from .arguments import MAX_COMPLETION_CHARS
from .catalogue import Policy
from .pipeline import refuse
from .request import Refused, Shared, identify
from .subscriptions import MAX_PER_SESSION, Subscriptions, session_of
from .text import strip_controls

MAX_COMPLETIONS = 100  # the most values completion/complete may return (the specification's limit)
log = logging.getLogger(__name__)


class Handlers:
    """The guard's own request handlers, which build_server registers with the SDK."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self.subscriptions = Subscriptions()

    async def completion(
        self, ctx: ServerRequestContext[Any, Any], params: CompleteRequestParams
    ) -> CompleteResult:
        """completion/complete: the author's completer for that argument, bounded."""
        ref = params.ref
        if isinstance(ref, PromptReference):
            policy = self._shared.catalogue.policy("prompt", ref.name)
        else:
            policy = self._shared.catalogue.policy("resource_template", ref.uri)
        policy = typing.cast(Policy, policy)  # the pipeline refused anything else
        completer = policy.completers.get(params.argument.name)
        values: list[str] = []
        if completer is not None:
            try:
                with anyio.fail_after(policy.timeout or self._shared.default_timeout):
                    suggested = await completer(params.argument.value)
            except Exception:
                log.exception("completion for %s %s failed", policy.kind, policy.name)
                raise MCPError(INTERNAL_ERROR, f"Completion for {policy.name} failed") from None
            values = [
                strip_controls(str(v))[:MAX_COMPLETION_CHARS] for v in list(suggested)[:MAX_COMPLETIONS]
            ]
        return CompleteResult(completion=Completion(values=values, has_more=False))

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        """resources/subscribe, after the pipeline admitted it like a read."""
        session = session_of(ctx)
        if session is None:
            message = (
                "resources/subscribe needs a session to send updates on: initialize and accept SSE "
                "(sessions on, MCP_SESSIONS=true), or use stdio."
            )
            refused = Refused(
                "input_validation_failed",
                "low",
                INVALID_REQUEST,
                message,
                reason="subscription without a session",
            )
            await refuse(identify(self._shared, ctx), refused, "error")  # raises the JSON-RPC error
        elif not self.subscriptions.add(session, params.uri):
            message = f"This session already has {MAX_PER_SESSION} subscriptions; unsubscribe from one first."
            refused = Refused(
                "rate_limit_exceeded",
                "medium",
                INVALID_REQUEST,
                message,
                reason="subscriptions per session",
                limit=MAX_PER_SESSION,
            )
            await refuse(identify(self._shared, ctx), refused, "error")  # raises the JSON-RPC error
        return EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        session = session_of(ctx)
        if session is not None:
            self.subscriptions.remove(session, params.uri)
        return EmptyResult()
