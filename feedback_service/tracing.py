"""Traces (OpenTelemetry), off unless the standard OTEL_* variables turn them
on: OTEL_TRACES_EXPORTER names the exporters (`none`, our default; `otlp`;
`console`; or any installed exporter's name). The SDK reads the rest itself:
OTEL_EXPORTER_OTLP_* (endpoint, protocol, headers), OTEL_SERVICE_NAME
(default here `feedback-service`), OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER, OTEL_BSP_*.

What is recorded: a server span per RPC (interceptors/tracing.py, with the
outcome set by interceptors/observability.py) and a child span per unit of
database work (store/database.py). Attribute names are here; no attribute
ever holds a token, a comment or any other request or response field."""

import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

DEFAULT_SERVICE_NAME = "feedback-service"
TRACER_NAME = "feedback_service"
# Semantic conventions for RPC spans, as opentelemetry-instrumentation-grpc
# writes them, and ours.
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"
PRINCIPAL_KIND = "feedback.principal_kind"
# The codes a server reports as a span error (the rest are the caller's mistakes).
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingConfigError(Exception):
    """OTEL_* settings that cannot be served; the message says which."""


def exporter_names(env: Mapping[str, str]) -> list[str]:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
    return [name for name in names if name and name != "none"]


def _exporter(name: str, env: Mapping[str, str]) -> "SpanExporter":
    if name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

            return Grpc()
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

            return Http()
        raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}: use grpc or http/protobuf")
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed")
    exporter: SpanExporter = next(iter(found)).load()()  # an entry point's object is untyped
    return exporter


def configure_tracing(env: Mapping[str, str] = os.environ) -> "TracerProvider | None":
    """A tracer provider exporting to the configured exporters, installed as
    the global one; None (and nothing installed) when tracing is off."""
    names = exporter_names(env)
    if not names:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    trace.set_tracer_provider(provider)
    return provider


def current_trace_id() -> str | None:
    """The trace id of the span being served (32 hex digits), if any."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def record_outcome(code: grpc.StatusCode, principal_kind: str | None) -> None:
    """Sets how the RPC ended, and who called, on the current server span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute(RPC_GRPC_STATUS_CODE, code.value[0])
    if principal_kind:
        span.set_attribute(PRINCIPAL_KIND, principal_kind)
    if code in SERVER_ERRORS:
        span.set_status(trace.StatusCode.ERROR, code.name)
