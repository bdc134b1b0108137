"""build_app(settings): the HTTP perimeter around the MCP server, outermost layer first.

1 trusted proxies  2 security headers  3 503 when a refusal cannot be audited  4 Origin gate + CORS
5 Host/Origin (DNS rebinding)  6 body size  7 pre-auth rate limit per address
8 block after repeated auth failures  9 audit of the MCP app's own HTTP refusals
10 bearer authentication  11 rate limit per principal  12 (OAuth only) 403 insufficient_scope for a
call whose scopes the token lacks (asks the guard)  13 the MCP-level chain (server/build.py).
Inside them all, Sessions gives initialize-era clients a session (so consent can ask them) and
answers GET /mcp without one with 405; SingleExchange answers a stateless JSON request without the
SDK's per-request task.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from types import FrameType

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ...security.audit.events import AuditUnavailableError
from ...security.audit.metrics import Metrics
from ...security.guard import Guard
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
from ...security.perimeter.known_credentials import KnownCredentials
from ...security.perimeter.origin import HostGate, OriginGate, cors, default_allowed_hosts, transport_security
from ...security.perimeter.scope_gate import ScopeGate
from ...security.perimeter.tls import tls_problems, uvicorn_options
from ...server import logs
from ...server.build import GuardedServer, build_server, freeze_startup_objects
from ...server.observability import configure_tracing, served_names
from ...server.services import Services, open_services
from ...settings import Settings, SettingsError
from . import admin
from .session_manager import SessionManager
from .sessions import NoSessions, Sessions
from .stateless import SingleExchange
from .streaming import NotifyingRequests

LIFESPAN_UNSUPPORTED = "ASGI 'lifespan' protocol appears unsupported."


def build_app(
    settings: Settings, services: Services | None = None, *, environ: Mapping[str, str] | None = None
) -> ASGIApp:
    """The MCP server behind its HTTP perimeter. `environ`: configure tracing from it (serve_http)."""
    problems = credentials.credential_problems(settings)
    if problems:
        raise SettingsError("the HTTP server cannot start:\n  " + "\n  ".join(problems))
    services = services or open_services(settings)
    metrics = (
        Metrics(services.alerts.counts if services.alerts else None) if settings.metrics_enabled else None
    )
    server = build_server(settings, services, outermost=[metrics.middleware] if metrics else [])
    if environ is not None:
        configure_tracing(
            environ, served_names(server.guard), trust_client_context=settings.trust_client_trace_context
        )
    allowed_hosts = settings.allowed_hosts or default_allowed_hosts(settings.host, settings.port)
    security = transport_security(allowed_hosts, settings.trusted_origins)
    mcp_app = _mcp_app(server, settings, security)
    used = server.guard.scopes_used()
    metadata, metadata_url = credentials.metadata_routes(settings, used)
    mcp_app.router.routes.extend([*admin.routes(server, services, metrics), *metadata])
    app = _sessions(mcp_app, server, settings, services, security)
    app = _perimeter(app, server.guard, settings, services, security, used, metadata_url)
    return _FlushAggregatesAtShutdown(app, services)


def _perimeter(
    app: ASGIApp,
    guard: Guard,
    settings: Settings,
    services: Services,
    security: TransportSecuritySettings,
    used: frozenset[str],
    metadata_url: str | None,
) -> ASGIApp:
    """The onion of the module docstring, wrapped innermost first (layers 12 to 1)."""
    advertised = frozenset(credentials.challenge_scopes(settings, used))
    # A first sign-in asks for the baseline only (required scopes and the read-only items'); a write
    # scope comes through the ScopeGate's 403 insufficient_scope step-up, at first use.
    baseline = frozenset(credentials.challenge_scopes(settings, guard.baseline_scopes()))
    required = frozenset(settings.oauth_required_scopes)
    if credentials.STEP_UP:
        app = ScopeGate(
            app,
            guard.surface_for,
            used,
            services.events,
            resource_metadata_url=metadata_url,
            advertised=advertised,
            required=required,
        )
    app = PrincipalRateLimit(app, services.limiter, settings.rate_limit, services.events)
    known = KnownCredentials()  # what a blocked address may still use (known_credentials.py)
    app = BearerAuth(
        app,
        credentials.build_verifier(settings),
        services.events,
        resource_metadata_url=metadata_url,
        required_scopes=required,
        challenge_scopes=baseline,
        credential=credentials.CREDENTIAL,
        known=known,
    )
    app = HttpErrorAudit(app, services.events)
    app = AuthFailureBlock.from_settings(app, services, settings, known)
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
    return app


def _mcp_app(server: GuardedServer, settings: Settings, security: TransportSecuritySettings) -> Starlette:
    """The SDK's Streamable HTTP app: stateless, JSON answers (the fast path; sessions are _sessions')."""
    if settings.log_level != "DEBUG":
        # The SDK logs "Terminating session: None" at INFO after every stateless request: noise that
        # cost a fifth of the throughput (the template's docs/benchmarks.md). Its warnings and errors
        # still show.
        logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    return server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        max_request_body_size=settings.max_body_bytes,
        transport_security=security,
        host=settings.host,
    )


def _sessions(
    mcp_app: ASGIApp,
    server: GuardedServer,
    settings: Settings,
    services: Services,
    security: TransportSecuritySettings,
) -> ASGIApp:
    """Inside the perimeter: the stateless fast paths, and (MCP_SESSIONS) initialize-era sessions."""
    # A 2026-07-28 request that asks for progress or log lines gets an answer that can carry them.
    streamed = NotifyingRequests(mcp_app, server.session_manager)
    stateless = SingleExchange(CleanJsonRpcErrors(streamed), server.session_manager)
    if not settings.sessions:
        return NoSessions(stateless)
    sessions = Sessions(
        stateless,
        _session_manager(server, settings, security),
        services.events,
        per_principal=settings.max_sessions_per_principal,
        max_streams=settings.session_max_streams,
        stream_idle_seconds=settings.session_stream_idle_seconds,
    )
    stateless.initialize = sessions.open  # an initialize that accepts SSE opens a session
    return sessions


class _FlushAggregatesAtShutdown:
    """At shutdown, write the audit events folded since the window began (events.py) and publish the
    audit chains' heads, before exiting."""

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
                self.services.events.publish_heads()  # the heads as the server leaves them
            return message

        await self.app(scope, receive_and_flush, send)


def _session_manager(
    server: GuardedServer, settings: Settings, security: TransportSecuritySettings
) -> StreamableHTTPSessionManager:
    """The SDK's stateful manager for initialize-era sessions: SSE answers, so a call can ask the user;
    with replay, each session keeps its newest events for a client that reconnects; without it, a
    request with nothing to say first is answered as JSON (both in session_manager.py)."""
    return SessionManager(
        app=server.session_manager.app,
        json_response=False,
        stateless=False,
        security_settings=security,
        session_idle_timeout=settings.session_idle_timeout_seconds,
        max_sessions=settings.max_sessions,
        max_request_body_size=settings.max_body_bytes,
        replay_bytes=settings.session_replay_bytes,
    )


def serve_http(settings: Settings, environ: Mapping[str, str]) -> None:
    """Run the perimeter with uvicorn: TLS (and mutual TLS) when configured, graceful shutdown on SIGTERM;
    tracing as the OTEL_* variables of `environ` ask (server/observability.py).

    On SIGTERM uvicorn stops accepting connections, lets requests in flight finish for up to
    MCP_SHUTDOWN_GRACE_SECONDS, closes the SDK session manager, then raises SIGTERM again for
    the handler that was there before it. That handler is ours: exit 0, a clean, planned stop.
    """
    import math

    import uvicorn

    problems = tls_problems(settings)
    if problems:
        raise SettingsError("the HTTP server cannot start:\n  " + "\n  ".join(problems))
    _check_port_free(settings.host, settings.port)
    services = open_services(settings)
    app = build_app(settings, services, environ=environ)
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
        log_config=None if logs.plain() else uvicorn.config.LOGGING_CONFIG,  # plain: server/logs.py's
    )
    logging.getLogger("uvicorn.access").addFilter(AccessLogWithoutQuery())
    if settings.log_level != "DEBUG":  # said of an app without a lifespan, which is not a problem
        logging.getLogger("uvicorn.error").addFilter(lambda record: record.msg != LIFESPAN_UNSUPPORTED)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # Set before the event loop starts, so asyncio keeps its own SIGINT handler out of the way: uvicorn
    # hands SIGINT back to this one when it has stopped.
    signal.signal(signal.SIGINT, _interrupt_once)
    limits.server(config).run()


def _check_port_free(host: str, port: int) -> None:
    """Before anything starts: a port another process holds is named with its fix (uvicorn would start
    the application, log the bind error and stop it again)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SettingsError(
                    f"port {port} on {host} is in use (is the server already running?): stop what listens "
                    f"there (`lsof -i :{port}` names it), or choose a free port with MCP_PORT or --port"
                ) from None
            raise SettingsError(
                f"cannot listen on {host}:{port} ({exc.strerror}); check MCP_HOST and MCP_PORT"
            ) from None


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    """uvicorn raises the Ctrl-C that stopped it again here: exit 130 (cli.main). A later one (pressed
    twice, or forwarded by `uv run` 200 ms late) would land anywhere in the exit, as a traceback: from now
    on SIGINT is ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt
