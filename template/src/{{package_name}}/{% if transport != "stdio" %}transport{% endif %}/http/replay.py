"""Replay for initialize-era sessions: a client whose SSE answer broke off resumes it (SEP-1699).

With replay on, each SSE answer of a session starts with a priming event (an id, no data, and the
reconnection delay), every event carries an id, and a client that lost the stream reconnects with GET
and `Last-Event-ID` to receive what it missed, the answer included. A server may also end a stream
on purpose mid-call (`close_sse_stream`) and let the client poll.

Each session has its own buffer: an event id resolves only in the session that produced it, and a
session answers only the principal that opened it (sessions.py), so nobody can replay another's
events. The buffer holds the newest events up to MCP_SESSION_REPLAY_BYTES and goes with its session.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mcp.server.streamable_http import (
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamableHTTPServerTransport,
    StreamId,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import JSONRPCMessage

RETRY_MS = 1_000  # the reconnection delay suggested to clients in the priming event
ENTRY_BYTES = 64  # what one buffered event counts for besides its message (id, stream, bookkeeping)


class SessionReplay(EventStore):
    """One session's newest events, at most `max_bytes` of serialised messages."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._events: OrderedDict[EventId, tuple[StreamId, JSONRPCMessage | None, int]] = OrderedDict()
        self._bytes = 0
        self._next = 0

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self._next += 1
        event_id = str(self._next)
        size = 0 if message is None else len(message.model_dump_json(by_alias=True, exclude_none=True))
        if size > self.max_bytes:
            message, size = None, 0  # too large to keep: its id is known, its content is not replayed
        size += ENTRY_BYTES  # every entry costs something, so the count of entries is bounded too
        self._events[event_id] = (stream_id, message, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, _, dropped) = self._events.popitem(last=False)
            self._bytes -= dropped
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        if last_event_id not in self._events:
            return None  # unknown here, or evicted: nothing to replay
        stream_id = self._events[last_event_id][0]
        after = False
        for event_id, (stream, message, _) in list(self._events.items()):
            if after and stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream_id


class ReplayingSessionManager(StreamableHTTPSessionManager):
    """The SDK's stateful manager, giving every new session a SessionReplay of its own (none: 0 bytes)."""

    def __init__(self, *, replay_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs, retry_interval=RETRY_MS if replay_bytes else None)
        if not hasattr(StreamableHTTPSessionManager, "_admit_session"):
            raise RuntimeError("this mcp version opens sessions elsewhere: update replay.py")
        self.replay_bytes = replay_bytes

    def _admit_session(self, requestor: Any) -> StreamableHTTPServerTransport | None:
        if not self.replay_bytes:
            return super()._admit_session(requestor)
        # The SDK hands each new transport the manager's event_store (synchronously, here): one per session.
        self.event_store = SessionReplay(self.replay_bytes)
        try:
            return super()._admit_session(requestor)
        finally:
            self.event_store = None
