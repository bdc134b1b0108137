"""resources/subscribe (initialize era): who asked to hear when which guarded resource changes.

A subscription belongs to one session (stdio, or an initialize-era HTTP session) and goes with it; a
session holds at most MAX_PER_SESSION. The guard admits a subscription like a read (a resource served
here, the caller's scopes, the rate limit); `Guard.resource_updated(uri)` then tells every session that
subscribed to that URI with `notifications/resources/updated` (the URI only, no content: the client
reads it again, through the guard). Stateless HTTP has no session to notify, so subscribing is refused
there. 2026-07-28 removed the method (the SDK answers it 404).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import anyio
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext

from ...server.sdk import connection

MAX_PER_SESSION = 100
log = logging.getLogger(__name__)


def session_of(ctx: ServerRequestContext[Any, Any]) -> Connection | None:
    """The connection of a session that outlives this request: stdio, or an HTTP session; else None."""
    session = connection(ctx.session)
    if not isinstance(session, Connection):
        return None
    return session if ctx.request is None or session.session_id is not None else None


class Subscriptions:
    def __init__(self) -> None:
        self._by_session: weakref.WeakKeyDictionary[Connection, set[str]] = weakref.WeakKeyDictionary()

    def add(self, session: Connection, uri: str) -> bool:
        """Subscribe; False when the session already holds MAX_PER_SESSION other URIs."""
        uris = self._by_session.setdefault(session, set())
        if uri not in uris and len(uris) >= MAX_PER_SESSION:
            return False
        uris.add(uri)
        return True

    def remove(self, session: Connection, uri: str) -> None:
        self._by_session.get(session, set()).discard(uri)

    async def updated(self, uri: str) -> int:
        """Tell every session subscribed to `uri`; the number told."""
        told = 0
        for session, uris in list(self._by_session.items()):
            if uri not in uris:
                continue
            try:
                await session.outbound.notify("notifications/resources/updated", {"uri": uri})
                told += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("a subscriber of %s has gone", uri)
        return told
