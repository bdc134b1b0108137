"""GET /metrics: Prometheus text format, for admin credentials only (as /security/events).

BearerAuth demands the admin scope on this path (401 without a credential, 403 with a tool key), and
each refusal writes its event. Each scrape probes the audit and rate-limit stores (at most once a
second, shared with /health?ready), so `mcp_store_up` is current.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...security.audit.events import SecurityEvents
from ...security.audit.metrics import Metrics, known_names
from ...security.identity.principal import Principal
from ...server.services import Services

if TYPE_CHECKING:
    from ...server.build import GuardedServer

PATH = "/metrics"


def install_metrics(
    server: GuardedServer,
    services: Services,
    store_checks: Callable[[], Awaitable[dict[str, str]]],
) -> Metrics:
    """Measure every MCP message (outermost middleware), count every event, serve GET /metrics."""
    metrics = Metrics(known_names(server, server.guard), services.alerts.counts if services.alerts else None)
    server.middleware.insert(0, metrics.middleware)
    services.events.subscribe(metrics.on_event)
    server.custom_route(PATH, methods=["GET"])(metrics_endpoint(metrics, services.events, store_checks))
    return metrics


def metrics_endpoint(
    metrics: Metrics, events: SecurityEvents, store_checks: Callable[[], Awaitable[dict[str, str]]]
) -> Callable[[Request], Awaitable[Response]]:
    async def serve_metrics(request: Request) -> Response:
        # Checked again so that a change in BearerAuth cannot open it.
        principal = getattr(request.state, "principal", None)
        if not isinstance(principal, Principal) or not principal.is_admin:
            client = request.client.host if request.client else "unknown"
            await events.record(
                "authorization_denied", "high", client, path=PATH, reason="no admin principal past auth"
            )
            return JSONResponse({"error": "forbidden", "message": "An admin credential is required."}, 403)
        metrics.set_store_states(await store_checks())
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return serve_metrics
