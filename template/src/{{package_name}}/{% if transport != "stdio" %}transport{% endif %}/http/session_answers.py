"""A session's answers: JSON when a request has nothing to say before its response, SSE otherwise.

The SDK's stateful transport answers every request of a session with an SSE stream, so that a tool can
ask the user (elicitation), report progress or log before it answers. The stream costs about as much
CPU as the rest of the request (docs/benchmarks.md): sse_starlette runs four tasks per answer, and the
events pass through two more memory streams. Most requests (ping, lists, most tool calls) send nothing
but their response, and the protocol lets the server choose per request: JSON or SSE, and the client
must read both. So `AnswerFirstTransport` dispatches the request, then waits for the first message for
it: its response is answered as JSON; anything else (a question, a notification), or no message within
ANSWER_WAIT_SECONDS (a long call then gets the stream's headers and keep-alive pings, as proxies
expect), starts the SDK's SSE stream with that message first (after its priming event when the
session keeps events for replay, replay.py). Everything else (notifications, responses, initialize)
is the SDK's own code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from http import HTTPStatus

import anyio
import pydantic_core
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext
from mcp.server.streamable_http import (
    CONTENT_TYPE_SSE,
    MCP_SESSION_ID_HEADER,
    REQUEST_STREAM_BUFFER_SIZE,
    EventMessage,
    SSEEvent,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import (
    DEFAULT_NEGOTIATED_VERSION,
    INTERNAL_ERROR,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .replay import ReplayingSessionManager

logger = logging.getLogger(__name__)

# Long enough for nearly every answer, short enough that a slow call's stream starts long before a
# proxy's read timeout or the stream's first keep-alive ping (15 s).
ANSWER_WAIT_SECONDS = 1.0


class SessionManager(ReplayingSessionManager):
    """The sessions of replay.py, answering through AnswerFirstTransport."""

    def _admit_session(self, requestor: AuthorizationContext | None) -> StreamableHTTPServerTransport | None:
        transport = super()._admit_session(requestor)
        if transport is not None:
            # The SDK builds the transport itself; this subclass adds behaviour only, no state.
            transport.__class__ = AnswerFirstTransport
        return transport


class AnswerFirstTransport(StreamableHTTPServerTransport):
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
