"""The shared security services, opened once from settings and passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from .security.events import SecurityEvents, open_event_store
from .security.ratelimit import RateLimiter, ensure_reachable
from .security.redact import Redactor, install_log_redaction
from .settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    events: SecurityEvents
    limiter: RateLimiter
    redactor: Redactor


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret value, so that redaction can remove it wherever it turns up."""
    values: list[str] = []
    for name, field in Settings.model_fields.items():
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            raw = getattr(settings, name).get_secret_value()
            values.extend(part.strip() for part in raw.split(",") if part.strip())
    return values


def open_services(settings: Settings) -> Services:
    """Open the audit store and the limiter; raises EventStoreConfigError or RateLimitConfigError (with the
    fix) if either cannot be reached."""
    ensure_reachable(settings.rate_limit_storage)
    redactor = Redactor(secret_values(settings))
    install_log_redaction(redactor)
    store = open_event_store(
        settings.events_url,
        retention_days=settings.security_events_retention_days,
        max_rows=settings.security_events_max_rows,
    )
    return Services(SecurityEvents(store, redactor), RateLimiter(settings.rate_limit_storage), redactor)
