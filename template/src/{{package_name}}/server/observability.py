"""Observability: OpenTelemetry tracing, anomaly detection, and what `check` reports about them.

Tracing is off by default. Set the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and install the `otel` extra (`uv sync --extra otel`); the SDK's
spans (one per MCP message) then go out over OTLP/HTTP (protobuf), batched, configured by the other
standard OTEL_* variables (headers, timeout, OTEL_SERVICE_NAME...). The SDK's spans carry the method,
the tool or prompt name and the request id, never arguments; a method MCP does not define and a name this
server does not serve are replaced by "_unknown" before export, and ids are cut to 64 characters, so
client text never leaves in a span name or attribute. A client's `_meta.traceparent` is ignored (each
request starts its own trace) unless MCP_TRUST_CLIENT_TRACE_CONTEXT=true says the clients are yours.

Anomaly detection listens to the security events (security/audit/anomaly.py); `check` lists what is
enabled (`operations_facts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from mcp_types.methods import SPEC_CLIENT_METHODS, SPEC_CLIENT_NOTIFICATION_METHODS

from .. import answers
from ..security.audit.anomaly import AnomalyDetector, Thresholds
from ..security.audit.events import SecurityEvents
from ..security.guard import Guard
from ..settings import Settings, SettingsError

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
NAME_ATTRIBUTES = ("gen_ai.tool.name", "gen_ai.prompt.name")
UNKNOWN = "_unknown"
METHOD = "mcp.method.name"
KNOWN_METHODS = frozenset([*SPEC_CLIENT_METHODS, *SPEC_CLIENT_NOTIFICATION_METHODS])
# Chosen by the client: kept, but short.
BOUNDED = {"jsonrpc.request.id": 64, "mcp.protocol.version": 32}


def tracing_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP endpoint the operator configured, or None when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    for variable in ENDPOINT_VARIABLES:
        if environ.get(variable, "").strip():
            return environ[variable].strip()
    return None


def served_names(guard: Guard) -> Callable[[str], bool]:
    """Whether a tool or prompt name is one this server serves (read once: what is served is fixed)."""
    return frozenset(
        [*(tool.name for tool in guard.tools()), *(prompt.name for prompt in guard.prompts())]
    ).__contains__


def configure_tracing(
    environ: Mapping[str, str], served: Callable[[str], bool], *, trust_client_context: bool = False
) -> bool:
    """Install a TracerProvider that exports over OTLP/HTTP; False (nothing done) when tracing is off.

    `served` (`served_names(guard)`) tells the names span attributes may keep from client text;
    `trust_client_context` (MCP_TRUST_CLIENT_TRACE_CONTEXT) lets a request join the trace its client names.
    """
    if tracing_endpoint(environ) is None:
        return False
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol.strip() != "http/protobuf":
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol.strip()} is not supported: use http/protobuf "
            "(the exporter this project installs), or unset it"
        )
    try:
        from opentelemetry import propagate, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise SettingsError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry exporter is not installed: "
            "run `uv sync --extra otel` (or pip install '.[otel]'), or unset OTEL_EXPORTER_OTLP_ENDPOINT"
        ) from None

    if not trust_client_context:
        propagate.set_global_textmap(_own_trace_context())

    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or answers.COMMAND})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(_known_names_only(served))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def _known_names_only(served: Callable[[str], bool]) -> Any:
    """A span processor (the otel extra is installed: configure_tracing checked) that replaces a method MCP
    does not define and a tool or prompt name the server does not serve (client text) before export, and
    cuts ids the client chose to length."""
    from opentelemetry.sdk.trace import Span, SpanProcessor

    class KnownNamesOnly(SpanProcessor):
        def on_start(self, span: Span, parent_context: Any = None) -> None:
            attributes = span.attributes or {}
            method = attributes.get(METHOD)
            if isinstance(method, str) and method not in KNOWN_METHODS:
                span.set_attribute(METHOD, UNKNOWN)
                span.update_name(UNKNOWN)
                method = UNKNOWN
            for attribute in NAME_ATTRIBUTES:
                value = attributes.get(attribute)
                if isinstance(value, str) and not served(value):
                    span.set_attribute(attribute, UNKNOWN)
                    span.update_name(f"{method} {UNKNOWN}")
            for attribute, limit in BOUNDED.items():
                value = attributes.get(attribute)
                if isinstance(value, str) and len(value) > limit:
                    span.set_attribute(attribute, value[:limit])

    return KnownNamesOnly()


def _own_trace_context() -> Any:
    """W3C trace context sent on (inject), never taken from a client (extract): each request starts a new
    trace, so no client places its requests in a trace of its choosing."""
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    class OwnTraceContext(TraceContextTextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            return context if context is not None else Context()

    return OwnTraceContext()


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
