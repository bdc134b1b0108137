"""The operators' endpoints: GET /health, and for admin credentials only GET /security/events and /metrics.

GET /health is liveness; GET /health?ready is readiness: do the rate-limit and audit stores answer? It is
not rate limited, so the stores are pinged at most once a second (`Readiness`).

BearerAuth demands the admin scope on these paths (401 without a credential, 403 with a tool key), and
each refusal writes its event; each endpoint checks again, so that a change there cannot open them. A
400 here is recorded as `http_error` by the perimeter (http_errors.py), like any other.

GET /security/events, the audit trail. Query: `severity` (minimum), `event`, `since` (RFC 3339),
`limit` (1..500), `order` (`asc`, the default: oldest first; `desc`: newest first), `cursor` (from
`next_cursor`, with the same `order`). Answer: {"events": [...], "next_cursor": "..." or null}. A cursor
is the store's position, so pages never repeat or skip an event while new ones arrive; null means
"nothing more now" (oldest first: no newer event yet; newest first: no older event kept).

GET /metrics, Prometheus text format. Each scrape probes the audit and rate-limit stores (at most once a
second, shared with /health?ready), so `mcp_store_up` is current.
"""

from __future__ import annotations

import logging
import time
import typing
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...security.audit.events import (
    MAX_PAGE,
    SEVERITY_RANK,
    CursorError,
    EventQuery,
    SecurityEvents,
    Severity,
    decode_cursor,
    encode_cursor,
)
from ...security.audit.metrics import Metrics, known_names
from ...security.identity.principal import principal_of
from ...server.services import Services

if TYPE_CHECKING:
    from ...server.build import GuardedServer

HEALTH_PATH = "/health"
EVENTS_PATH = "/security/events"
METRICS_PATH = "/metrics"
PARAMETERS = frozenset({"severity", "event", "since", "limit", "cursor", "order"})
ORDERS = {"asc": False, "desc": True}  # order -> newest first
DEFAULT_LIMIT = 100
log = logging.getLogger(__name__)


def routes(server: GuardedServer, services: Services, metrics: Metrics | None) -> list[Route]:
    """The operators' routes; with `metrics`, also count every event and learn the names served."""
    readiness = Readiness(services)
    found = [
        Route(HEALTH_PATH, health_endpoint(readiness), methods=["GET"]),
        Route(EVENTS_PATH, events_endpoint(services.events), methods=["GET"]),
    ]
    if metrics is not None:
        # Read once the server is built and its HTTP app made: every other name a client sends is "_unknown".
        metrics.names = known_names(server.session_manager.app, server.guard)
        services.events.subscribe(metrics.on_event)
        endpoint = metrics_endpoint(metrics, services.events, readiness.checks)
        found.append(Route(METRICS_PATH, endpoint, methods=["GET"]))
    return found


def health_endpoint(readiness: Readiness) -> Callable[[Request], Awaitable[Response]]:
    async def health(request: Request) -> Response:
        """Liveness; with ?ready, readiness: do the rate-limit and audit stores answer? Nothing else."""
        if "ready" not in request.query_params:
            return JSONResponse({"status": "ok"})
        checks = await readiness.checks()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
        )

    return health


class Readiness:
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


def events_endpoint(events: SecurityEvents) -> Callable[[Request], Awaitable[Response]]:
    async def security_events(request: Request) -> Response:
        refused = await _refuse_without_admin(request, events, EVENTS_PATH)
        if refused is not None:
            return refused
        try:
            query = parse_query(request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": "invalid_request", "message": str(exc)}, 400)
        try:
            page = await events.store.query(query)
        except CursorError as exc:
            return JSONResponse({"error": "invalid_request", "message": str(exc)}, 400)
        except Exception as exc:  # noqa: BLE001 - any store failure: say so, keep details in the log
            log.error("audit store query failed (%s)", type(exc).__name__)
            return JSONResponse(
                {"error": "unavailable", "message": "The audit store cannot be read right now."},
                503,
                headers={"Retry-After": "5"},
            )
        cursor = None
        if page.next_position:
            cursor = encode_cursor(page.next_position, newest_first=query.newest_first)
        return JSONResponse({"events": [event.to_dict() for event in page.events], "next_cursor": cursor})

    return security_events


def parse_query(params: Mapping[str, str]) -> EventQuery:
    """Validate the query string; ValueError messages are safe to return to the caller."""
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0][:40]!r}; use {', '.join(sorted(PARAMETERS))}")
    severity = params.get("severity")
    if severity is not None and severity not in SEVERITY_RANK:
        raise ValueError("severity must be one of low, medium, high, critical")
    raw_limit = params.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE}")
    since = None
    if params.get("since"):
        try:
            since = datetime.fromisoformat(params["since"][:40].replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("since must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z") from None
        if since.tzinfo is None:
            raise ValueError("since must carry a time zone, e.g. 2026-01-31T12:00:00Z")
    order = params.get("order", "asc")
    if order not in ORDERS:
        raise ValueError("order must be asc (oldest first, the default) or desc (newest first)")
    cursor = params.get("cursor")
    after = None
    if cursor:
        after, newest_first = decode_cursor(cursor)
        if newest_first != ORDERS[order]:
            raise ValueError(
                f"cursor was issued for order={'desc' if newest_first else 'asc'}; "
                "pass it with the same order, or start again without cursor"
            )
    event = params.get("event")
    if event is not None and (len(event) > 64 or not event.replace("_", "").isalnum()):
        raise ValueError("event must be an event name such as authentication_failed")
    return EventQuery(
        severity=typing.cast(Severity | None, severity),
        event=event,
        since=since,
        limit=int(raw_limit),
        after=after,
        newest_first=ORDERS[order],
    )


def metrics_endpoint(
    metrics: Metrics, events: SecurityEvents, store_checks: Callable[[], Awaitable[dict[str, str]]]
) -> Callable[[Request], Awaitable[Response]]:
    async def serve_metrics(request: Request) -> Response:
        refused = await _refuse_without_admin(request, events, METRICS_PATH)
        if refused is not None:
            return refused
        metrics.set_store_states(await store_checks())
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return serve_metrics


async def _refuse_without_admin(request: Request, events: SecurityEvents, path: str) -> Response | None:
    # BearerAuth already demands the admin scope here; checked again so a change there cannot open it.
    principal = principal_of(request)
    if principal is not None and principal.is_admin:
        return None
    client = request.client.host if request.client else "unknown"
    await events.record(
        "authorization_denied", "high", client, path=path, reason="no admin principal past auth"
    )
    return JSONResponse({"error": "forbidden", "message": "An admin credential is required."}, 403)
