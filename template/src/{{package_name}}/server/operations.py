"""Operations: anomaly detection listens to the security events; `check` reports what is enabled."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from ..security.audit.anomaly import AnomalyDetector, Thresholds
from ..security.audit.events import SecurityEvents
from ..settings import Settings
from .tracing import tracing_endpoint


def subscribe_anomaly_detection(
    settings: Settings, events: SecurityEvents, destructive_tools: Iterable[str]
) -> None:
    if settings.anomaly_detection:
        thresholds = Thresholds(
            window_seconds=settings.anomaly_window_seconds,
            baseline_windows=settings.anomaly_baseline_windows,
            rate_factor=settings.anomaly_rate_factor,
            min_calls=settings.anomaly_min_calls,
            refusal_threshold=settings.anomaly_refusal_threshold,
            max_principals=settings.anomaly_max_principals,
        )
        events.subscribe(AnomalyDetector(events, thresholds, destructive_tools))


def operations_facts(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """What `check` reports about metrics, tracing, alerts and anomaly detection (never a secret)."""
    facts = []
    if settings.transport == "http":
        facts.append(
            "metrics: GET /metrics (admin key), per replica"
            if settings.metrics_enabled
            else "metrics: off (MCP_METRICS_ENABLED=false)"
        )
    endpoint = tracing_endpoint(environ)
    facts.append(f"tracing: OTLP/HTTP to {_host_of(endpoint)}" if endpoint else "tracing: off")
    url = settings.alert_webhook_url.get_secret_value()
    facts.append(
        f"alerts: events of severity {settings.alert_min_severity} and above POSTed to {_host_of(url)}"
        if url
        else "alerts: off (set MCP_ALERT_WEBHOOK_URL)"
    )
    facts.append(
        f"anomaly detection: on, per replica (calls over {settings.anomaly_rate_factor:g}x the baseline, "
        f"{settings.anomaly_refusal_threshold} refusals per {settings.anomaly_window_seconds} s, "
        "first destructive use)"
        if settings.anomaly_detection
        else "anomaly detection: off (MCP_ANOMALY_DETECTION=false)"
    )
    return facts


def _host_of(url: str) -> str:
    # The host only: a webhook's path or an endpoint's query may carry a token.
    try:
        return urlsplit(url).hostname or "(no host)"
    except ValueError:
        return "(invalid URL)"
