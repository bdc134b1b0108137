"""The shared security services, opened once from settings and passed down explicitly."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..security.audit.alerts import AlertWebhook
from ..security.audit.events import SecurityEvents, open_event_store
from ..security.audit.redact import Redactor, install_log_redaction
from ..security.identity.keys import raw_keys
from ..security.limits import RateLimiter, ensure_reachable
from ..security.tasks import TaskStore, open_task_store
from ..settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    events: SecurityEvents
    limiter: RateLimiter
    redactor: Redactor
    tasks: TaskStore  # MCP_TASKS_URL: where tasks live (security/tasks/)
    alerts: AlertWebhook | None = None  # MCP_ALERT_WEBHOOK_URL: serious events POSTed there


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret value, so that redaction can remove it wherever it turns up."""
    values: list[str] = []
    for name, field in Settings.model_fields.items():
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            raw = getattr(settings, name).get_secret_value()
            if name.endswith("api_keys"):
                values.extend(raw_keys(raw))  # digests and key names are not secret
                continue
            # A list (several values while one rotates) and the whole value, in case it holds a comma.
            values.extend(part.strip() for part in raw.split(",") if part.strip())
            values.append(raw.strip())
    return values


def audit_digest_key(settings: Settings) -> bytes | None:
    """The key of the audit trail's digests: MCP_AUDIT_DIGEST_KEY, else one derived from the first
    MCP_REQUEST_STATE_KEYS key (shared by every replica already), else None (a key per process)."""
    key = settings.audit_digest_key.get_secret_value().strip()
    if key:
        return key.encode()
    sealing = settings.request_state_key_list
    if sealing:
        return hmac.new(sealing[0].encode(), b"audit-digest", hashlib.sha256).digest()
    return None


def open_services(settings: Settings) -> Services:
    """Open the audit store and the limiter; raises EventStoreConfigError or RateLimitConfigError (with the
    fix) if either cannot be reached."""
    ensure_reachable(settings.rate_limit_storage)
    redactor = Redactor(secret_values(settings), audit_digest_key(settings))
    install_log_redaction(redactor)
    store = open_event_store(
        settings.events_url,
        retention_days=settings.security_events_retention_days,
        max_rows=settings.security_events_max_rows,
        max_anonymous_rows=settings.security_events_max_anonymous_rows,
    )
    per_source = RateLimiter.parse(settings.security_events_per_source)
    events = SecurityEvents(
        store,
        redactor,
        per_source=per_source.amount,
        per_source_window_seconds=per_source.get_expiry(),
        replica=settings.replica_id,
    )
    alerts = subscribe_alerts(settings, events)
    tasks = open_task_store(settings.tasks_url)
    return Services(events, RateLimiter(settings.rate_limit_storage), redactor, tasks, alerts)


def subscribe_alerts(settings: Settings, events: SecurityEvents) -> AlertWebhook | None:
    url = settings.alert_webhook_url.get_secret_value()
    if not url:
        return None
    # Coalesced per kind over the same window as the trail folds anonymous events in.
    window = RateLimiter.parse(settings.security_events_per_source).get_expiry()
    webhook = AlertWebhook(
        url,
        settings.alert_min_severity,
        timeout=settings.alert_timeout_seconds,
        coalesce_seconds=window,
        secret=settings.alert_webhook_secret.get_secret_value(),
    )
    events.subscribe(webhook)
    events.head_listeners.append(webhook.publish_heads)
    events.on_store_health(webhook.store_health)  # fed from the failing write itself
    return webhook
