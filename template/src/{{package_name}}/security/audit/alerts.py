"""Alerts: security events at or above MCP_ALERT_MIN_SEVERITY are POSTed as JSON to MCP_ALERT_WEBHOOK_URL.

The body is the event exactly as stored (already redacted). With MCP_ALERT_WEBHOOK_SECRET set, each POST
is signed as Standard Webhooks (standardwebhooks.com) signs: `webhook-id` (the event id),
`webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
so the receiver can tell the server's alerts from forged ones, and old ones replayed. Sending never
blocks a request: events wait
in a bounded queue for one background sender, which retries with backoff. A full queue drops the new
alert; a webhook that keeps failing is logged and counted (`mcp_alerts_total` on /metrics), and neither
ever stops the server or changes what a client is answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx2

from .events import SEVERITY_RANK, SecurityEvent

QUEUE_SIZE = 1_000
ATTEMPTS = 4
FIRST_BACKOFF_SECONDS = 0.5
log = logging.getLogger(__name__)


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
        self.counts = {"sent": 0, "failed": 0, "dropped": 0}

    async def __call__(self, event: SecurityEvent) -> None:
        if SEVERITY_RANK[event.severity] < self.min_rank:
            return
        try:
            self._queue.put_nowait(event.to_dict())
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
            event_id, timestamp = str(alert.get("id", "")), str(int(time.time()))
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
