"""Small helpers the perimeter middlewares share: JSON refusals, the client address, the answered status."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from mcp.server.auth.provider import AccessToken
from pydantic import Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..identity.principal import principal_in


class CredentialRejectedError(Exception):
    """A verifier's refusal; `reason` is safe to record (it never contains the credential)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NamedAccessToken(AccessToken):
    """A verified token whose verifier also named the principal (OAuth: `user:<sub>` or `client:<id>`)."""

    principal_id: str
    groups: list[str] = Field(
        default_factory=list
    )  # from the claim MCP_OAUTH_GROUPS_CLAIM names (Cedar policies read them)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def send_json(
    send: Send, status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def refusal(error: str, message: str) -> dict[str, object]:
    return {"error": error, "message": message}


class AccessLogWithoutQuery(logging.Filter):
    """uvicorn's access log shows paths without their query: a client may have put a credential there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            record.args = (client, method, str(path).split("?", 1)[0], version, status)
        return True


def replay_body(body: bytes, receive: Receive) -> Receive:
    """The request's receive channel, with the body that was already read put back in front."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def status_of(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> int:
    """Run `app` and return the status it answered with (0 if it started no response)."""
    status = 0

    async def watch(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    await app(scope, receive, watch)
    return status


def authenticated(scope: Scope) -> bool:
    return principal_in(scope) is not None


async def refuse_unless_authenticated(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, refuse: Callable[[], Awaitable[None]]
) -> None:
    """Run `app`; if the request does not end authenticated, send `refuse()`'s answer instead of its own.

    For a client address that is limited or blocked: its valid credentials still get through (keys are
    256-bit, so admitting them tells a guesser nothing), everything else is refused.
    """
    refused = False

    async def replace(message: Message) -> None:
        nonlocal refused
        if message["type"] == "http.response.start" and not authenticated(scope):
            refused = True
            await refuse()
            return
        if not refused:
            await send(message)

    await app(scope, receive, replace)
