"""OpenTelemetry: export the SDK's spans (one per MCP message) when the operator asks for it.

Off by default. Set the standard OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
and install the `otel` extra (`uv sync --extra otel`); spans then go out over OTLP/HTTP (protobuf),
batched, configured by the other standard OTEL_* variables (headers, timeout, OTEL_SERVICE_NAME...).
The SDK's spans carry the method, the tool or prompt name and the request id, never arguments; names
this server does not serve are replaced by "_unknown" before export, so client text never leaves in a
span name or attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import answers
from ..settings import SettingsError

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
NAME_ATTRIBUTES = ("gen_ai.tool.name", "gen_ai.prompt.name")
UNKNOWN = "_unknown"
REQUEST_ID = "jsonrpc.request.id"  # chosen by the client: kept, but short
MAX_REQUEST_ID = 64


def tracing_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP endpoint the operator configured, or None when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    for variable in ENDPOINT_VARIABLES:
        if environ.get(variable, "").strip():
            return environ[variable].strip()
    return None


# The tool and prompt names the server serves; build_server fills it.
SERVED_NAMES: set[str] = set()


def configure_tracing(environ: Mapping[str, str]) -> bool:
    """Install a TracerProvider that exports over OTLP/HTTP; False (nothing done) when tracing is off."""
    if tracing_endpoint(environ) is None:
        return False
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol.strip() != "http/protobuf":
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol.strip()} is not supported: use http/protobuf "
            "(the exporter this project installs), or unset it"
        )
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise SettingsError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry exporter is not installed: "
            "run `uv sync --extra otel` (or pip install '.[otel]'), or unset OTEL_EXPORTER_OTLP_ENDPOINT"
        ) from None

    class KnownNamesOnly(SpanProcessor):
        """Replaces a tool or prompt name the server does not serve (client text) before export."""

        def on_start(self, span: Span, parent_context: Any = None) -> None:
            attributes = span.attributes or {}
            for attribute in NAME_ATTRIBUTES:
                value = attributes.get(attribute)
                if isinstance(value, str) and value not in SERVED_NAMES:
                    span.set_attribute(attribute, UNKNOWN)
                    span.update_name(f"{attributes.get('mcp.method.name', '')} {UNKNOWN}")
            request_id = attributes.get(REQUEST_ID)
            if isinstance(request_id, str) and len(request_id) > MAX_REQUEST_ID:
                span.set_attribute(REQUEST_ID, request_id[:MAX_REQUEST_ID])

    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or answers.COMMAND})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(KnownNamesOnly())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
