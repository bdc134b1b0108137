"""Alerts: security events at or above MCP_ALERT_MIN_SEVERITY are POSTed as JSON to MCP_ALERT_WEBHOOK_URL.

The body is the event exactly as stored (already redacted); the audit chains' heads are posted too,
as `{"event": "audit_chain_head", "heads": [...]}` (events.py), so a deleted tail is seen from outside,
never coalesced. Alerts are coalesced per kind (event name)
and window: the first event of a kind in a window is sent as it is; the others of that kind are counted
and sent as one `alerts_coalesced` body when the window ends (kind, count, worst severity, the first
identifiers). So a flood from a thousand addresses costs one alert and one summary, and never crowds
out an alert of another kind.

An audit store that stops taking writes is alerted from the failing write itself (SecurityEvents'
health listeners): one `audit_store_down` (critical) per outage, one `audit_store_recovered` when it
works again; an outage stores no event, so an alert fed from stored events could never report it.

Sending never blocks a request: alerts wait in a bounded queue for one background sender, which retries
with backoff. A full queue drops the new alert; a webhook that keeps failing is logged and counted
(`mcp_alerts_total` on /metrics), and neither ever stops the server or changes what a client is answered.

With MCP_ALERT_WEBHOOK_SECRET set, each POST is signed as Standard Webhooks (standardwebhooks.com) signs:
`webhook-id` (the event id, or the body's digest), `webhook-timestamp` (Unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, so the receiver can tell the
server's alerts from forged ones, and old ones replayed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2

from .events import SEVERITY_RANK, SecurityEvent, Severity

QUEUE_SIZE = 1_000
COALESCE_SECONDS = 60.0
MAX_IDENTIFIERS = 20  # named in an alerts_coalesced body; the rest are counted
ATTEMPTS = 4
FIRST_BACKOFF_SECONDS = 0.5
log = logging.getLogger(__name__)


@dataclass
class _Window:
    """One kind's coalescing window: when it ends, and what was folded into it."""

    ends: float
    started: str
    count: int = 0
    worst: Severity = "low"
    identifiers: list[str] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    def fold(self, event: SecurityEvent) -> None:
        self.count += 1
        if SEVERITY_RANK[event.severity] > SEVERITY_RANK[self.worst]:
            self.worst = event.severity
        if len(self.identifiers) < MAX_IDENTIFIERS and event.identifier not in self.identifiers:
            self.identifiers.append(event.identifier)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class AlertWebhook:
    """An events listener (SecurityEvents.subscribe) that forwards serious events to a webhook."""

    def __init__(
        self,
        url: str,
        min_severity: str = "high",
        *,
        timeout: float = 5.0,
        queue_size: int = QUEUE_SIZE,
        attempts: int = ATTEMPTS,
        backoff: float = FIRST_BACKOFF_SECONDS,
        coalesce_seconds: float = COALESCE_SECONDS,
        secret: str = "",
    ) -> None:
        if min_severity not in SEVERITY_RANK:
            raise ValueError(f"min_severity must be one of {', '.join(SEVERITY_RANK)}")
        self._url = url
        self._key = signing_key(secret) if secret else None
        self.min_rank = SEVERITY_RANK[min_severity]
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._sender: asyncio.Task[None] | None = None
        self._coalesce_seconds = coalesce_seconds
        self._windows: dict[str, _Window] = {}
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}

    async def __call__(self, event: SecurityEvent) -> None:
        if SEVERITY_RANK[event.severity] < self.min_rank:
            return
        kind = event.event
        window = self._windows.get(kind)
        if window is not None and time.monotonic() < window.ends:
            window.fold(event)  # sent as one alerts_coalesced body when the window ends
            if window.timer is None:
                delay = max(0.0, window.ends - time.monotonic())
                window.timer = asyncio.get_running_loop().call_later(delay, self._close, kind, window)
            return
        if window is not None:
            self._close(kind, window)  # an ended window's summary goes before the new window's first
        self._windows[kind] = _Window(time.monotonic() + self._coalesce_seconds, _now())
        self._enqueue(event.to_dict())

    def _close(self, kind: str, window: _Window) -> None:
        if self._windows.get(kind) is window:
            del self._windows[kind]
        if window.timer is not None:
            window.timer.cancel()
            window.timer = None
        if not window.count:
            return
        self._enqueue(
            {
                "event": "alerts_coalesced",
                "timestamp": _now(),
                "severity": window.worst,
                "kind": kind,
                "count": window.count,
                "identifiers": window.identifiers,
                "window_start": window.started,
                "window_seconds": self._coalesce_seconds,
            }
        )

    def publish_heads(self, tokens: list[str]) -> None:
        """A head listener (SecurityEvents.head_listeners): the chains' heads, kept outside the store."""
        self._enqueue({"event": "audit_chain_head", "timestamp": _now(), "heads": tokens})

    def store_health(self, up: bool) -> None:
        """SecurityEvents' health listener: one alert when the audit store goes down, one when it is back."""
        self._enqueue(
            {
                "event": "audit_store_recovered" if up else "audit_store_down",
                "timestamp": _now(),
                "severity": "medium" if up else "critical",
                "details": {
                    "meaning": "security events are stored again"
                    if up
                    else "security events cannot be stored: tools are refused until the store is back"
                },
            }
        )

    def _enqueue(self, alert: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            if self.counts["dropped"] % 100 == 1:  # one line per hundred, not one per event
                log.warning("alert queue full (%d waiting): alerts are dropped", self._queue.qsize())
            return
        if self._sender is None or self._sender.done():
            # Started on first use, in the loop that serves requests.
            self._sender = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        async with httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
            while True:
                alert = await self._queue.get()
                try:
                    await self._send(http, alert)
                finally:
                    self._queue.task_done()

    async def _send(self, http: httpx2.AsyncClient, alert: dict[str, Any]) -> None:
        body = json.dumps(alert, separators=(",", ":"), default=str).encode()
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                response = await http.post(self._url, content=body, headers=self._headers(alert, body))
            except Exception as exc:  # noqa: BLE001 - any failure to deliver: retry, then count it
                problem = type(exc).__name__
                continue
            if response.is_success:
                self.counts["sent"] += 1
                return
            problem = f"HTTP {response.status_code}"
        self.counts["failed"] += 1
        # Never the URL: it often carries the webhook's token.
        log.warning(
            "alert webhook failed after %d attempts (%s); event %s %s not delivered",
            self._attempts,
            problem,
            alert.get("event"),
            alert.get("id"),
        )

    def _headers(self, alert: dict[str, Any], body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._key is not None:
            # The event's id; a summary or a store alert has none: its body's digest (the same on a retry).
            event_id = str(alert.get("id") or "msg_" + hashlib.sha256(body).hexdigest()[:32])
            timestamp = str(int(time.time()))
            signed = f"{event_id}.{timestamp}.".encode() + body
            signature = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
            headers |= {
                "webhook-id": event_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": f"v1,{signature}",
            }
        return headers

    async def drain(self) -> None:
        """Wait until every queued alert was sent or given up (for tests and shutdown)."""
        await self._queue.join()


def signing_key(secret: str) -> bytes:
    """The HMAC key of MCP_ALERT_WEBHOOK_SECRET: a Standard Webhooks secret (`whsec_<base64>`) decoded, any
    other value as its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()
