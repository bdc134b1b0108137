"""build_app(settings): the HTTP perimeter around the MCP server, outermost layer first.

1 trusted proxies  2 security headers  3 503 when a refusal cannot be audited  4 Origin gate + CORS
5 Host/Origin (DNS rebinding)  6 body size  7 pre-auth rate limit per address
8 block after repeated auth failures  9 audit of the MCP app's own HTTP refusals
10 bearer authentication  11 rate limit per principal  12 (OAuth only) 403 insufficient_scope for a
call whose scopes the token lacks (asks the guard)  13 MCP guard (in server.py)
Inside them all, Sessions gives initialize-era clients a session (so consent can ask them) and
answers GET /mcp without one with 405; SingleExchange answers a stateless JSON request without the
SDK's per-request task.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import anyio
from mcp.server import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ...security.audit.events import AuditUnavailableError
from ...security.perimeter import credentials
from ...security.perimeter.admission import BodyLimit, ClientRateLimit, PrincipalRateLimit
from ...security.perimeter.audit_failure import AuditFailureResponse
from ...security.perimeter.auth import BearerAuth
from ...security.perimeter.blocking import AuthFailureBlock
from ...security.perimeter.common import AccessLogWithoutQuery
from ...security.perimeter.connections import ConnectionLimits
from ...security.perimeter.framing import AmbiguousFraming
from ...security.perimeter.headers import SecurityHeadersMiddleware
from ...security.perimeter.http_errors import HttpErrorAudit
from ...security.perimeter.jsonrpc_errors import CleanJsonRpcErrors
from ...security.perimeter.origin import HostGate, OriginGate, cors, default_allowed_hosts, transport_security
from ...security.perimeter.scope_gate import ScopeGate
from ...security.perimeter.tls import tls_problems, uvicorn_options
from ...server.build import build_server, freeze_startup_objects
from ...server.services import Services, open_services
from ...settings import Settings, SettingsError
from . import admin
from .session_manager import SessionManager
from .sessions import NoSessions, Sessions
from .stateless import SingleExchange
from .streaming import NotifyingRequests


def build_app(settings: Settings, services: Services | None = None) -> ASGIApp:
    problems = credentials.credential_problems(settings)
    if problems:
        raise SettingsError("the HTTP server cannot start:\n  " + "\n  ".join(problems))
    services = services or open_services(settings)
    server = build_server(settings, services)

    readiness = _Readiness(services)

    @server.custom_route("/health", methods=["GET"])  # type: ignore[untyped-decorator]
    async def health(request: Request) -> Response:
        """Liveness; with ?ready, readiness: do the rate-limit and audit stores answer? Nothing else."""
        if "ready" not in request.query_params:
            return JSONResponse({"status": "ok"})
        checks = await readiness.checks()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
        )

    server.custom_route(admin.EVENTS_PATH, methods=["GET"])(admin.events_endpoint(services.events))
    if settings.metrics_enabled:
        admin.install_metrics(server, services, readiness.checks)

    if settings.log_level != "DEBUG":
        # The SDK logs "Terminating session: None" at INFO after every stateless request: noise that
        # cost a fifth of the throughput (docs/benchmarks.md). Its warnings and errors still show.
        logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    allowed_hosts = settings.allowed_hosts or default_allowed_hosts(settings.host, settings.port)
    security = transport_security(allowed_hosts, settings.trusted_origins)
    mcp_app = server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        max_request_body_size=settings.max_body_bytes,
        transport_security=security,
        host=settings.host,
    )
    used = server.guard.scopes_used()
    metadata, metadata_url = credentials.metadata_routes(settings, used)
    mcp_app.router.routes.extend(metadata)
    advertised = frozenset(credentials.challenge_scopes(settings, used))
    required = frozenset(settings.oauth_required_scopes)

    # A 2026-07-28 request that asks for progress or log lines gets an answer that can carry them.
    streamed = NotifyingRequests(mcp_app, server.session_manager)
    stateless = SingleExchange(CleanJsonRpcErrors(streamed), server.session_manager)
    app: ASGIApp = NoSessions(stateless)
    if settings.sessions:
        sessions = Sessions(
            stateless,
            _session_manager(server, settings, security),
            services.events,
            per_principal=settings.max_sessions_per_principal,
            max_streams=settings.session_max_streams,
            stream_idle_seconds=settings.session_stream_idle_seconds,
        )
        stateless.initialize = sessions.open  # an initialize that accepts SSE opens a session
        app = sessions
    if credentials.STEP_UP:
        app = ScopeGate(
            app,
            server.guard.surface_for,
            used,
            services.events,
            resource_metadata_url=metadata_url,
            advertised=advertised,
            required=required,
        )
    app = PrincipalRateLimit(app, services.limiter, settings.rate_limit, services.events)
    app = BearerAuth(
        app,
        credentials.build_verifier(settings),
        services.events,
        resource_metadata_url=metadata_url,
        required_scopes=required,
        challenge_scopes=advertised,
    )
    app = HttpErrorAudit(app, services.events)
    app = AuthFailureBlock.from_settings(app, services, settings)
    app = ClientRateLimit(app, services.limiter, settings.rate_limit, services.events)
    app = BodyLimit(app, settings.max_body_bytes, services.events)
    app = HostGate(app, security, services.events)
    app = cors(app, settings.trusted_origins)
    app = OriginGate(app, settings.trusted_origins, services.events)  # and the server's own origin
    app = AmbiguousFraming(app, services.events)
    app = AuditFailureResponse(app)
    app = SecurityHeadersMiddleware(app, tls=settings.tls_enabled)
    if settings.trusted_proxies:
        app = ProxyHeadersMiddleware(app, trusted_hosts=settings.trusted_proxies)  # type: ignore[arg-type,assignment]
    return _FlushAggregatesAtShutdown(app, services)


class _FlushAggregatesAtShutdown:
    """At shutdown, write the audit events folded since the window began (events.py), before exiting."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_and_flush() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                try:
                    await self.services.events.flush_aggregates()
                except AuditUnavailableError:
                    logging.getLogger("security").critical("audit store failed; folded events not stored")
            return message

        await self.app(scope, receive_and_flush, send)


def _session_manager(
    server: MCPServer, settings: Settings, security: TransportSecuritySettings
) -> StreamableHTTPSessionManager:
    """The SDK's stateful manager for initialize-era sessions: SSE answers, so a call can ask the user;
    with replay, each session keeps its newest events for a client that reconnects; without it, a
    request with nothing to say first is answered as JSON (both in session_manager.py)."""
    return SessionManager(
        app=server._lowlevel_server,
        json_response=False,
        stateless=False,
        security_settings=security,
        session_idle_timeout=settings.session_idle_timeout_seconds,
        max_sessions=settings.max_sessions,
        max_request_body_size=settings.max_body_bytes,
        replay_bytes=settings.session_replay_bytes,
    )


class _Readiness:
    """Pings the stores at most once a second: /health is not rate limited, so it must stay cheap."""

    def __init__(self, services: Services, max_age: float = 1.0) -> None:
        self._pings = (("rate_limit", services.limiter.ping), ("audit", services.events.store.ping))
        self._max_age = max_age
        self._checked_at = -max_age
        self._checks: dict[str, str] = {}

    async def checks(self) -> dict[str, str]:
        if time.monotonic() - self._checked_at < self._max_age:
            return self._checks
        checks = {}
        for name, ping in self._pings:
            try:
                with anyio.fail_after(3):
                    await ping()
                checks[name] = "ok"
            except Exception:  # noqa: BLE001 - any failure means "not ready"; details stay in the log
                checks[name] = "unavailable"
        self._checks, self._checked_at = checks, time.monotonic()
        return checks


def serve_http(settings: Settings) -> None:
    """Run the perimeter with uvicorn: TLS (and mutual TLS) when configured, graceful shutdown on SIGTERM.

    On SIGTERM uvicorn stops accepting connections, lets requests in flight finish for up to
    MCP_SHUTDOWN_GRACE_SECONDS, closes the SDK session manager, then raises SIGTERM again for
    the handler that was there before it. That handler is ours: exit 0, a clean, planned stop.
    """
    import math

    import uvicorn

    problems = tls_problems(settings)
    if problems:
        raise SettingsError("the HTTP server cannot start:\n  " + "\n  ".join(problems))
    services = open_services(settings)
    app = build_app(settings, services)
    limits = ConnectionLimits(
        services.events,
        max_connections=settings.max_connections,
        max_per_address=settings.max_connections_per_address,
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        exempt=frozenset(settings.trusted_proxies),
        tls=settings.tls_enabled,
    )
    freeze_startup_objects()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=False,  # X-Forwarded-For is honoured only from MCP_TRUSTED_PROXIES (see build_app)
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        http=limits.protocol(),  # h11 with read deadlines and connection caps (connections.py)
        **uvicorn_options(settings),
    )
    logging.getLogger("uvicorn.access").addFilter(AccessLogWithoutQuery())
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # Set before the event loop starts, so asyncio keeps its own SIGINT handler out of the way: uvicorn
    # hands SIGINT back to this one when it has stopped.
    signal.signal(signal.SIGINT, _interrupt_once)
    limits.server(config).run()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    """uvicorn raises the Ctrl-C that stopped it again here: exit 130 (cli.main). A later one (pressed
    twice, or forwarded by `uv run` 200 ms late) would land anywhere in the exit, as a traceback: from now
    on SIGINT is ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt
