"""What a running tool may tell its client (progress, log lines), and the session's log level."""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from typing import Any

from mcp.server.connection import allowed_log_levels
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.types import (
    EmptyResult,
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    SetLevelRequestParams,
)

from ...server.sdk import connection
from .call import CallInfo
from .task_slot import in_task
from .text import cap, strip_controls

MAX_NOTIFICATIONS_PER_CALL = 100  # a call's notifications after this many are dropped (and counted)
MAX_NOTIFICATION_CHARS = 1_000  # the longest text of one log line or progress message
_LOG_LEVELS: tuple[LoggingLevel, ...] = typing.get_args(LoggingLevel)
_SESSION_LOG_LEVEL = "guard_log_level"  # where logging/setLevel keeps a session's level


class Notify:
    """What a running tool may tell its client: progress and log lines, each sanitised like a result.

    A tool takes a parameter annotated `Notify` (never an argument the client sends). Every text has
    configured secrets and credential-shaped text removed, hidden and control characters stripped and
    its length capped at MAX_NOTIFICATION_CHARS; a call sends at most MAX_NOTIFICATIONS_PER_CALL, the
    rest are dropped and counted in its audit event. A client receives them where its transport carries
    them: stdio, an initialize-era session (on the call's SSE answer), a 2026-07-28 request that asked
    for progress (`progressToken`) or log lines (`_meta` logLevel). Elsewhere they are dropped: a tool
    never fails because nobody listens.
    """

    def __init__(self, context: Context, redact: Callable[[str], str], call: CallInfo) -> None:
        self._context = context
        self._redact = redact
        self._call = call

    def _counted_in(self) -> bool:
        """Count one more notification of this call; False once the call has sent its most, and in a
        task (its request has been answered: the client polls tasks/get instead)."""
        if in_task():
            return False
        if self._call.notifications >= MAX_NOTIFICATIONS_PER_CALL:
            self._call.notifications_dropped += 1
            return False
        self._call.notifications += 1
        return True

    def _text(self, text: str) -> str:
        return cap(strip_controls(self._redact(str(text))), MAX_NOTIFICATION_CHARS)

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress (sent only if the client asked for it with a progress token)."""
        numbers = [progress] if total is None else [progress, total]
        if not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            raise ValueError("progress and total must be finite numbers")
        if self._counted_in():
            text = None if message is None else self._text(message)
            await self._context.report_progress(progress, total, text)

    async def log(self, level: LoggingLevel, message: str) -> None:
        """Send one log line at `level` (debug, info, notice, warning, error, critical, alert, emergency)."""
        if level not in _LOG_LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LOG_LEVELS)}")
        ctx = self._context.request_context
        if level not in _levels_for(ctx) or not self._counted_in():
            return
        params = LoggingMessageNotificationParams(level=level, data=self._text(message))
        await ctx.session.send_notification(
            LoggingMessageNotification(params=params), related_request_id=ctx.request_id
        )

    async def info(self, message: str) -> None:
        await self.log("info", message)

    async def warning(self, message: str) -> None:
        await self.log("warning", message)


def counts(call: CallInfo) -> dict[str, Any]:
    """How many notifications a call sent through Notify, and how many it tried past the cap."""
    if not call.notifications:
        return {}
    counted: dict[str, Any] = {"notifications": call.notifications}
    if call.notifications_dropped:
        counted["notifications_dropped"] = call.notifications_dropped
    return counted


def _session_state(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
    # The connection's scratch state, which lives as long as the client's session (stdio, or an
    # initialize-era HTTP session).
    state: dict[str, Any] = connection(ctx.session).state
    return state


def _levels_for(ctx: ServerRequestContext[Any, Any]) -> frozenset[LoggingLevel]:
    """The levels this request may receive: the 2026-07-28 per-request opt-in, or the session's setLevel."""
    allowed = allowed_log_levels(ctx.protocol_version, ctx.meta)
    chosen = _session_state(ctx).get(_SESSION_LOG_LEVEL)
    if chosen in _LOG_LEVELS:
        allowed &= frozenset(_LOG_LEVELS[_LOG_LEVELS.index(chosen) :])
    return allowed


async def handle_set_level(ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
    """logging/setLevel (initialize era): the least severe level Notify.log sends to this session."""
    _session_state(ctx)[_SESSION_LOG_LEVEL] = params.level
    return EmptyResult()
