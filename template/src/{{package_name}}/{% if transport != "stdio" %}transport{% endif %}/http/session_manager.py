"""Initialize-era sessions: the SDK's stateful manager, with replay per session and JSON-first answers.

Replay (SEP-1699): a client whose SSE answer broke off resumes it. With replay on, each SSE answer of a
session starts with a priming event (an id, no data, and the reconnection delay), every event carries an
id, and a client that lost the stream reconnects with GET and `Last-Event-ID` to receive what it missed,
the answer included. A server may also end a stream
on purpose mid-call (`close_sse_stream`) and let the client poll.

Each session has its own buffer: an event id resolves only in the session that produced it, and a
session answers only the principal that opened it (sessions.py), so nobody can replay another's
events. The buffer holds the newest events up to MCP_SESSION_REPLAY_BYTES and goes with its session.

JSON-first answers: JSON when a request has nothing to say before its response, SSE otherwise. The SDK's
stateful transport answers every request of a session with an SSE stream, so that a tool can ask the user
(elicitation), report progress or log before it answers. The stream costs about as much CPU as the rest of the
request (the template's docs/benchmarks.md): sse_starlette runs four tasks per answer, and the events pass
through two more memory streams. Most requests (ping, lists, most tool calls) send nothing but their response,
and the protocol lets the server choose per request: JSON or SSE, and the client must read both. So
`AnswerFirstTransport` dispatches the request, then waits for the first message for it: its response is
answered as JSON; anything else (a question, a notification), or no message within ANSWER_WAIT_SECONDS (a long
call then gets the stream's headers and keep-alive pings, as proxies expect), starts the SDK's SSE stream with
that message first (after its priming event when the session keeps events for replay, above). Everything else
(notifications, responses, initialize) is the SDK's own code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from http import HTTPStatus
from typing import Any

import anyio
import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.streamable_http import (
    CONTENT_TYPE_SSE,
    MCP_SESSION_ID_HEADER,
    REQUEST_STREAM_BUFFER_SIZE,
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    SSEEvent,
    StreamableHTTPServerTransport,
    StreamId,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import (
    DEFAULT_NEGOTIATED_VERSION,
    INTERNAL_ERROR,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from ...server.sdk import SESSION_MANAGER_METHODS, SESSION_MANAGER_STATE, TRANSPORT_METHODS, TRANSPORT_STATE

logger = logging.getLogger(__name__)

# Long enough for nearly every answer, short enough that a slow call's stream starts long before a
# proxy's read timeout or the stream's first keep-alive ping (15 s).
ANSWER_WAIT_SECONDS = 1.0
RETRY_MS = 1_000  # the reconnection delay suggested to clients in the priming event
# What one buffered event costs in memory besides its message: its tuple, its bytes object's header, its
# size (measured with tracemalloc: about 140 bytes), so the setting bounds the memory and the entries.
ENTRY_BYTES = 160


class SessionReplay(EventStore):
    """One session's newest events, at most `max_bytes` in memory, their messages kept as JSON bytes.

    Bytes, not the SDK's message objects: a buffer of small messages as objects took 6 times its setting
    (pydantic models and their dicts), as bytes it takes what it counts. Event ids are consecutive
    numbers, so an id is found by its offset from the oldest kept, without an index of its own.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._events: deque[tuple[StreamId, bytes | None]] = deque()
        self._sizes: deque[int] = deque()
        self._bytes = 0
        self._next = 0  # the newest event's number; the oldest kept is _next - len(_events) + 1

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self._next += 1
        payload = (
            None
            if message is None
            else jsonrpc_message_adapter.dump_json(message, by_alias=True, exclude_none=True)
        )
        if payload is not None and len(payload) > self.max_bytes:
            payload = None  # too large to keep: its id is known, its content is not replayed
        size = ENTRY_BYTES + (0 if payload is None else len(payload))
        self._events.append((stream_id, payload))
        self._sizes.append(size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._events.popleft()
            self._bytes -= self._sizes.popleft()
        return str(self._next)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        oldest = self._next - len(self._events) + 1
        known = last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) <= 20
        if not known or not oldest <= int(last_event_id) <= self._next:
            return None  # unknown here, or evicted: nothing to replay
        offset = int(last_event_id) - oldest
        stream_id = self._events[offset][0]
        for number, (stream, payload) in enumerate(list(self._events)[offset + 1 :], int(last_event_id) + 1):
            if stream == stream_id and payload is not None:
                await send_callback(EventMessage(jsonrpc_message_adapter.validate_json(payload), str(number)))
        return stream_id


class SessionManager(StreamableHTTPSessionManager):
    """The SDK's stateful manager: every new session gets a SessionReplay of its own (none with 0 bytes)
    and answers through AnswerFirstTransport."""

    relies_on = SESSION_MANAGER_METHODS + SESSION_MANAGER_STATE  # the SDK's private members (server/sdk.py)

    def __init__(self, *, replay_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs, retry_interval=RETRY_MS if replay_bytes else None)
        self.replay_bytes = replay_bytes

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        # The SDK hands each new transport the manager's event_store (synchronously, here): one per session.
        self.event_store = SessionReplay(self.replay_bytes) if self.replay_bytes else None
        try:
            transport = super()._admit_session(requestor)
        finally:
            self.event_store = None
        if transport is not None:
            # The SDK builds the transport itself; this subclass adds behaviour only, no state.
            transport.__class__ = AnswerFirstTransport
        return transport


class AnswerFirstTransport(StreamableHTTPServerTransport):
    """A session's transport that answers a request as JSON when its first message is its response."""

    relies_on = TRANSPORT_METHODS + TRANSPORT_STATE  # the SDK's private members (server/sdk.py)

    async def _handle_post_request(
        self, scope: Scope, request: Request, receive: Receive, send: Send
    ) -> None:
        writer = self._read_stream_writer
        try:
            message = await self._plain_request(request)
        except Exception:  # noqa: BLE001 - the SDK's path below answers (and logs) what failed here
            message = None
        if message is None or writer is None:
            await super()._handle_post_request(scope, request, receive, send)
            return
        request_id = str(message.id)
        try:
            if not await self._validate_request_headers(request, send):
                return
            version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER, DEFAULT_NEGOTIATED_VERSION)
            # With replay, stored before anything of the request (storage order is wire order); sent
            # only if the answer streams.
            priming = await self._mint_priming_event(request_id, version)
            # None in the stream: ANSWER_WAIT_SECONDS passed with nothing for this request yet.
            to_request, from_server = anyio.create_memory_object_stream[EventMessage | None](
                REQUEST_STREAM_BUFFER_SIZE
            )
            # message_router delivers this request's messages here (the SDK types the pair without None).
            self._request_streams[request_id] = (to_request, from_server)  # type: ignore[assignment]
            timer = asyncio.get_running_loop().call_later(ANSWER_WAIT_SECONDS, _mark_waited, to_request)
            await writer.send(self._create_session_message(message, request, request_id, version))
            try:
                # Never cancelled: a message delivered in the same instant would be lost.
                first = await from_server.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if priming is not None and not self._terminated:
                    # The server ended the stream on purpose (close_sse_stream): the client gets the
                    # priming event, reconnects with Last-Event-ID and is replayed the rest.
                    await self._stream(request_id, None, priming, from_server, scope, receive, send)
                    return
                # The session ended (DELETE, idle timeout) while the request was in flight.
                await self._clean_up_memory_streams(request_id)
                error = "Session terminated before the request completed"
                await self._create_error_response(error, HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR)(
                    scope, receive, send
                )
                return
            finally:
                timer.cancel()
            if first is not None and isinstance(first.message, JSONRPCResponse | JSONRPCError):
                await self._clean_up_memory_streams(request_id)
                await self._create_json_response(first.message)(scope, receive, send)
                return
            await self._stream(request_id, first, priming, from_server, scope, receive, send)
        except Exception as err:  # as the SDK's own POST handler answers a failure
            logger.exception("Error handling POST request")
            await self._create_error_response(
                "Error handling POST request", HTTPStatus.INTERNAL_SERVER_ERROR, INTERNAL_ERROR
            )(scope, receive, send)
            await writer.send(Exception(err))

    async def _plain_request(self, request: Request) -> JSONRPCRequest | None:
        """The body's request if this POST is one the SDK would answer with an SSE stream, else None."""
        if self.is_json_response_enabled:
            return None
        has_json, has_sse = check_accept_headers(request)
        if not (has_json and has_sse and self._check_content_type(request)):
            return None
        try:
            raw = pydantic_core.from_json(await request.body())
            message = jsonrpc_message_adapter.validate_python(raw, by_name=False)
        except (ValueError, ValidationError):
            return None
        if not isinstance(message, JSONRPCRequest) or message.method == "initialize":
            return None
        return message

    async def _stream(
        self,
        request_id: str,
        first: EventMessage | None,
        priming: SSEEvent | None,
        from_server: MemoryObjectReceiveStream[EventMessage | None],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """The SDK's SSE answer (its headers, events and keep-alive pings), `first` as its first event."""
        to_client, events = anyio.create_memory_object_stream[SSEEvent](0)
        self._sse_stream_writers[request_id] = to_client
        headers = {
            "Cache-Control": "no-cache, no-transform",
            "Connection": "keep-alive",
            "Content-Type": CONTENT_TYPE_SSE,
            **({MCP_SESSION_ID_HEADER: self.mcp_session_id} if self.mcp_session_id else {}),
        }

        async def forward() -> None:
            await self._forward(request_id, first, priming, from_server, to_client)

        response = EventSourceResponse(content=events, data_sender_callable=forward, headers=headers)
        try:
            await response(scope, receive, send)
        except Exception:
            logger.exception("SSE response error")
            await to_client.aclose()
            await self._clean_up_memory_streams(request_id)
        finally:
            await events.aclose()

    async def _forward(
        self,
        request_id: str,
        first: EventMessage | None,
        priming: SSEEvent | None,
        from_server: MemoryObjectReceiveStream[EventMessage | None],
        to_client: MemoryObjectSendStream[SSEEvent],
    ) -> None:
        """Like the SDK's _run_sse_writer: this request's messages onto its stream, up to the response."""
        try:
            async with to_client, from_server:
                if priming is not None:
                    await to_client.send(priming)
                pending = [first] if first is not None else []
                while True:
                    message = pending.pop() if pending else await from_server.receive()
                    if message is None:
                        continue  # the wait mark, if it fired as the first message arrived
                    await to_client.send(self._create_event_data(message))
                    if isinstance(message.message, JSONRPCResponse | JSONRPCError):
                        break
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            logger.debug("SSE stream closed")
        except Exception:
            logger.exception("Error in SSE writer")
        finally:
            self._sse_stream_writers.pop(request_id, None)
            await self._clean_up_memory_streams(request_id)


def _mark_waited(to_request: MemoryObjectSendStream[EventMessage | None]) -> None:
    """Wake the waiting request: nothing came within ANSWER_WAIT_SECONDS, so it streams."""
    # WouldBlock: messages are already queued for it; closed: it is over.
    with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
        to_request.send_nowait(None)
