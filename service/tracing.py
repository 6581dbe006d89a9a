"""Optional OpenTelemetry tracing (``NEXTBEST_OTEL=1``; ``pip install nextbest[otel]``).

A span per request (route template as its name) from Litestar's OpenTelemetry middleware,
exported in batches with the OTLP/HTTP exporter configured by the standard ``OTEL_*``
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ...). The engine adds the
decision id, arm and stage timings to the request's span. Nothing here is imported when
tracing is off.
"""

from __future__ import annotations

from typing import Any

__all__ = ["annotate_span", "tracing_plugin"]


def tracing_plugin(exporter: Any = None) -> tuple[Any, Any]:
    """(the Litestar plugin, its tracer provider: shut it down to flush the last spans);
    ``exporter``: a span exporter (default OTLP/HTTP from the OTEL_* variables)."""
    try:
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # the otel extra is not installed
        raise RuntimeError(
            "NEXTBEST_OTEL=1 needs OpenTelemetry: pip install 'nextbest[otel]'"
        ) from exc
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "nextbest"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=provider)), provider


def annotate_span(decision_id: str, arm: str, stages: dict[str, float]) -> None:
    """Add a decision's id, arm and stage timings (ms) to the request's span."""
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attribute("nextbest.decision_id", decision_id)
    span.set_attribute("nextbest.arm", arm)
    for name, seconds in stages.items():
        span.set_attribute(f"nextbest.stage_ms.{name}", round(seconds * 1000.0, 3))
