"""Browser origins (CORS) and DNS-rebinding protection (Host and Origin checks)."""

from __future__ import annotations

import re

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..audit.events import SecurityEvents
from .common import client_address, refusal, send_json

ALLOWED_HEADERS = ["Authorization", "Content-Type", "Mcp-Protocol-Version", "Mcp-Session-Id", "Last-Event-ID"]
EXPOSED_HEADERS = ["Mcp-Session-Id"]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# host[:port] with a numeric port: the SDK matches "localhost:*" by prefix, so "localhost:1.evil.example"
# would pass it. A name, an IPv4 address or a bracketed IPv6 address; the port 1 to 5 digits.
_HOST_HEADER = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")
# Probes reach /health by whatever address they have (127.0.0.1 in the container, the pod IP from an
# orchestrator), not by the public name. It reveals nothing and changes nothing, so it needs no Host check;
# every other path, /mcp and /security/events included, still does.
HOST_CHECK_EXEMPT = frozenset({("GET", "/health"), ("HEAD", "/health")})


def default_allowed_hosts(bind_host: str, port: int) -> list[str]:
    """Host header values a client may use when MCP_ALLOWED_HOSTS is empty: only the bind address."""
    if bind_host in LOCAL_HOSTS or bind_host in ("0.0.0.0", "::"):  # noqa: S104  # nosec B104 - comparing, not binding
        return ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
    host = f"[{bind_host}]" if ":" in bind_host else bind_host
    return [f"{host}:{port}", host]


def transport_security(allowed_hosts: list[str], trusted_origins: list[str]) -> TransportSecuritySettings:
    # The server's own origins (an allowed Host, either scheme) pass the SDK's check too; OriginGate,
    # outside it, holds a same-origin request to the scheme the request really came in with.
    own = [f"{scheme}://{host}" for host in allowed_hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=trusted_origins + own,
    )


def is_same_origin(scope: Scope, origin: str) -> bool:
    """Origin is this server's own: the request's scheme and Host. HostGate then checks the Host."""
    host = Headers(scope=scope).get("host")
    return host is not None and origin == f"{scope.get('scheme', 'http')}://{host}"


def cors(app: ASGIApp, trusted_origins: list[str]) -> ASGIApp:
    return CORSMiddleware(
        app,
        allow_origins=trusted_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=600,
    )


class OriginGate:
    """An Origin header that is neither trusted nor the server's own gets 403 before anything answers it.

    A page served by this server itself (same scheme and Host) is not a cross-origin caller; a
    rebinding page has its own Host, which HostGate refuses (421) unless MCP_ALLOWED_HOSTS lists it.
    """

    def __init__(self, app: ASGIApp, trusted_origins: list[str], events: SecurityEvents) -> None:
        self.app = app
        self.trusted = frozenset(trusted_origins)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if origin is None or origin in self.trusted or is_same_origin(scope, origin):
            await self.app(scope, receive, send)
            return
        await self.events.record(
            "untrusted_origin_blocked",
            "medium",
            client_address(scope),
            origin=origin[:200],
            path=scope["path"],
            anonymous=True,
        )
        await send_json(send, 403, refusal("untrusted_origin", "This Origin is not in MCP_TRUSTED_ORIGINS."))


class HostGate:
    """DNS rebinding: the SDK's Host/Origin validation, answered before authentication and audited.

    GET /health is exempt from the Host check (HOST_CHECK_EXEMPT), not from the Origin check."""

    def __init__(self, app: ASGIApp, settings: TransportSecuritySettings, events: SecurityEvents) -> None:
        self.app = app
        self.checker = TransportSecurityMiddleware(settings)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (scope["method"], scope["path"]) in HOST_CHECK_EXEMPT and "origin" not in Headers(scope=scope):
            await self.app(scope, receive, send)
            return
        from starlette.requests import Request

        headers = Headers(scope=scope)
        if not _HOST_HEADER.match(headers.get("host", "")):
            status = 421
        else:
            refused = await self.checker.validate_request(Request(scope), is_post=False)
            if refused is None:
                await self.app(scope, receive, send)
                return
            status = refused.status_code
        wrong = "host" if status == 421 else "origin"
        await self.events.record(
            "untrusted_origin_blocked",
            "medium",
            client_address(scope),
            reason=f"{wrong} not allowed",
            host=headers.get("host", "")[:200],
            origin=headers.get("origin", "")[:200],
            anonymous=True,
        )
        fix = "MCP_ALLOWED_HOSTS" if wrong == "host" else "MCP_TRUSTED_ORIGINS"
        await send_json(send, status, refusal(f"invalid_{wrong}", f"This {wrong} is not in {fix}."))
