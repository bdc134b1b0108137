"""403 `insufficient_scope` before a call runs, so that an OAuth client can step up (MCP authorization).

The guard knows which scopes a tool, resource, resource template, prompt or completion needs
(`Guard.surface_for`); this layer asks it before the request reaches the MCP app and answers HTTP 403
with `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`, which spec-following clients
read to ask the user for more. A caller that holds every scope the server uses passes straight
through; only the others have their body read (BodyLimit bounds it). Installed in OAuth mode only:
an API key cannot step up, so there (as on stdio) the guard's in-band refusal naming the scope stays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ..audit.events import SecurityEvents
from ..guard import Match
from ..identity.principal import principal_in
from .auth import bearer_challenge
from .common import client_address, refusal, replay_body, send_json

SurfaceFor = Callable[[str, Any], Match | None]


class ScopeGate:
    def __init__(
        self,
        app: ASGIApp,
        surface_for: SurfaceFor,
        used: frozenset[str],
        events: SecurityEvents,
        *,
        resource_metadata_url: str | None,
        advertised: frozenset[str],
        required: frozenset[str] = frozenset(),
        path: str = "/mcp",
    ) -> None:
        self.app = app
        self.surface_for = surface_for
        self.used = used
        self.events = events
        self.resource_metadata_url = resource_metadata_url
        self.advertised = advertised
        self.required = required
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = principal_in(scope) if scope["type"] == "http" else None
        if (
            principal is None
            or scope["method"] != "POST"
            or scope["path"] != self.path
            or principal.has_scopes(self.used)
        ):
            await self.app(scope, receive, send)
            return
        body, receive = await _buffered(receive)
        missing: set[str] = set()
        names: list[str] = []
        request_ids: list[Any] = []
        for method, params, request_id in _requests(body):
            target = self.surface_for(method, params)
            if target is not None and not principal.has_scopes(target.policy.scopes):
                missing |= target.policy.scopes - principal.scopes
                names.append(target.policy.name)
                request_ids.append(request_id)
        if not missing:
            await self.app(scope, receive, send)
            return
        # Everything the call needs plus what the token already has of ours, so that a client that
        # replaces its scopes (rather than adding to them, as 2026-07-28 asks) keeps its other grants.
        wanted = " ".join(sorted(missing | self.required | (principal.scopes & self.advertised)))
        details: dict[str, Any] = {"tool": names[0], "missing_scopes": sorted(missing)}
        if principal.client_id:
            details["client_id"] = principal.client_id
        await self.events.record(
            "authorization_denied",
            "medium",
            principal.id,
            request_id=None if request_ids[0] is None else str(request_ids[0]),
            client=client_address(scope),
            **details,
        )
        challenge = bearer_challenge("insufficient_scope", None, wanted, self.resource_metadata_url)
        message = f"{names[0]} needs scope {' '.join(sorted(missing))}; ask for it and retry."
        await send_json(send, 403, refusal("insufficient_scope", message), {"WWW-Authenticate": challenge})


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole body, and a receive channel that hands it to the app again."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return body, replay_body(body, receive)


def _requests(body: bytes) -> list[tuple[str, dict[str, Any], Any]]:
    """(method, params, id) of each JSON-RPC request in the body; nothing for a body that does not
    parse (the MCP app refuses it itself)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return []
    found: list[tuple[str, dict[str, Any], Any]] = []
    for message in parsed if isinstance(parsed, list) else [parsed]:
        if isinstance(message, dict) and isinstance(message.get("method"), str):
            params = message.get("params")
            found.append((message["method"], params if isinstance(params, dict) else {}, message.get("id")))
    return found
