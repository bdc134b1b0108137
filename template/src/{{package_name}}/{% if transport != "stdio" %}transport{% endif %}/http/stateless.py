"""Stateless JSON requests answered in their own task, through the SDK's single-exchange driver.

In stateless mode the SDK builds a transport, a dispatcher and a server task for every POST, then passes the
request through memory streams to that task and the answer back: about a third of the CPU of a request (the
template's docs/benchmarks.md). A stateless JSON POST that carries one JSON-RPC request needs none of it, so
`SingleExchange` hands it to `serve_one`, the SDK's driver for exactly that (the one its 2026-07-28 entry
uses), with the same connection, context and metadata the SDK's stateless path builds. Everything else (GET,
DELETE, notifications, batches, bodies that do not parse, refused headers, newer protocol revisions) goes to
the SDK's own app unchanged, which answers it as before; an `initialize` from a client that accepts SSE goes
to `initialize` (sessions.py) when sessions are on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server.connection import Connection
from mcp.server.runner import serve_one
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import MessageMetadata, ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    DEFAULT_NEGOTIATED_VERSION,
    INTERNAL_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    jsonrpc_message_adapter,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ...security.perimeter.common import replay_body
from ...server import sdk

logger = logging.getLogger(__name__)

_JSON_HEADERS = [(b"content-type", b"application/json")]


class SingleExchange:
    """ASGI layer in front of the SDK's Streamable HTTP app (stateless, JSON responses)."""

    def __init__(self, app: ASGIApp, manager: StreamableHTTPSessionManager, path: str = "/mcp") -> None:
        if not (manager.stateless and manager.json_response):
            raise ValueError("SingleExchange serves only stateless_http=True, json_response=True")
        self.app = app
        self._manager = manager
        self._path = path
        # Where an initialize from a client that accepts SSE goes (sessions.py); None: stateless too.
        self.initialize: ASGIApp | None = None
        self._security = TransportSecurityMiddleware(manager.security_settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self._path:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        version = request.headers.get("mcp-protocol-version")
        if not (
            (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS)
            and check_accept_headers(request)[0]
            and request.headers.get("content-type", "").split(";")[0].strip() == "application/json"
            and await self._security.validate_request(request, is_post=True) is None
        ):
            await self.app(scope, receive, send)
            return
        body = await request.body()
        message = _single_request(body)
        if message is None:
            await self.app(scope, replay_body(body, receive), send)
            return
        if (
            message.method == "initialize"
            and self.initialize is not None
            and check_accept_headers(request)[1]
        ):
            # An initialize-era client that can read SSE: give it a session, so it can be asked.
            await self.initialize(scope, replay_body(body, receive), send)
            return
        answer = await self._answer(request, message, version or DEFAULT_NEGOTIATED_VERSION)
        payload = answer.model_dump_json(by_alias=True, exclude_unset=True).encode()
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(
        self, request: Request, message: JSONRPCRequest, version: str
    ) -> JSONRPCResponse | JSONRPCError:
        context = _RequestContext(
            transport=TransportContext(kind="streamable-http", can_send_request=False),
            request_id=message.id,
            message_metadata=ServerMessageMetadata(request_context=request, can_send_request=False),
        )
        connection = Connection.from_envelope(version, None, None)
        # The manager entered the server's lifespan once at start-up; every request shares its state.
        lifespan_state = sdk.lifespan_state(self._manager)
        try:
            result = await serve_one(
                self._manager.app,
                context,
                message.method,
                message.params,
                connection=connection,
                lifespan_state=lifespan_state,
            )
        except Exception as exc:  # the wire boundary: every failure becomes a JSON-RPC error
            error = handler_exception_to_error_data(exc)
            if error is None:
                logger.exception("handler for %s raised", message.method)
                error = ErrorData(code=INTERNAL_ERROR, message="Internal server error")
            return JSONRPCError(jsonrpc="2.0", id=message.id, error=error)
        return JSONRPCResponse(jsonrpc="2.0", id=message.id, result=result)


def _single_request(body: bytes) -> JSONRPCRequest | None:
    """The body's JSON-RPC request, or None for anything the SDK should answer itself."""
    try:
        message = jsonrpc_message_adapter.validate_json(body, by_name=False)
    except (ValueError, ValidationError):
        return None
    return message if isinstance(message, JSONRPCRequest) else None


@dataclass
class _RequestContext:
    """The SDK's dispatch context for one request with no back channel (a JSON answer carries only
    the response): server-to-client requests raise NoBackChannelError, notifications and progress
    are dropped, as in the SDK's own stateless JSON mode."""

    transport: TransportContext
    request_id: RequestId
    message_metadata: MessageMetadata
    cancel_requested: anyio.Event = field(default_factory=anyio.Event)
    can_send_request: bool = field(default=False, init=False)

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        return None

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return None
