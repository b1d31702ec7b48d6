"""Traces (OpenTelemetry): one per call, continued from the caller's W3C trace context (``traceparent`` /
``tracestate`` in gRPC metadata or HTTP headers) or started here, with a span per stage of the call and the
context passed on to Triton, whose own spans then join the same trace.

Configured by the OpenTelemetry variables, read by the SDK itself: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns tracing on, exporting OTLP/HTTP (protobuf) there;
``OTEL_SERVICE_NAME`` (default ``ara-reranker-gateway``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (default: parent-based, always on) and ``OTEL_BSP_*`` (the batch exporter) apply as
they do everywhere; ``OTEL_SDK_DISABLED=true`` turns it off again.

Off (the default), ``NO_TRACING`` stands in: every span is the one shared do-nothing object and the
OpenTelemetry packages are not even imported, so tracing costs a call that returns at once. This module is the
only one that imports OpenTelemetry (the ``tracing`` extra of the package).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Iterable, Mapping

from ara_reranker_server.errors import StartupError

__all__ = ["Tracing", "NO_TRACING", "tracing_from_env", "otlp_traces_url", "start_ns_of", "OTEL_VARIABLES", "TRACE_HEADERS", "DEFAULT_SERVICE_NAME"]

log = logging.getLogger(__name__)

# The OpenTelemetry variables the gateway honours (read by the SDK; the deploy files set some of them).
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME",
                  "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_TRACES_EXPORTER",
                  "OTEL_SDK_DISABLED", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                  "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_COMPRESSION")
# The W3C trace context: what is read from a caller and passed on to Triton (lowercase, as gRPC metadata must be).
TRACE_HEADERS = ("traceparent", "tracestate")
DEFAULT_SERVICE_NAME = "ara-reranker-gateway"
_NOTHING = nullcontext()


def otlp_traces_url(environ: Mapping[str, str]) -> str | None:
    """Where OTLP/HTTP traces go by the OpenTelemetry variables (None: tracing off): the traces endpoint as
    given, or the base endpoint plus ``/v1/traces``. The one definition of "tracing is on" for the gateway
    and for the Triton the launcher starts beside it."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/traces" if base else None


class _NoSpan:
    """A span that records nothing: what every span is while tracing is off."""

    __slots__ = ()
    recording = False

    def __enter__(self) -> "_NoSpan":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        pass

    def finish(self, status: str, error: str, attributes: Mapping[str, Any]) -> None:
        pass

    def ids(self) -> dict[str, str]:
        return {}


NO_SPAN = _NoSpan()


class Tracing:
    """Tracing off: the interface the gateway calls, doing nothing. ``OtelTracing`` does the work."""

    enabled = False

    def continued(self, carrier: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> AbstractContextManager:
        """While inside: the caller's trace context (from gRPC metadata pairs or HTTP headers) is the current one."""
        return _NOTHING

    def call(self, api: str, start_ns: int | None = None) -> Any:
        """The span of one API call through ``api`` (a child of the current context), current while inside;
        ``finish`` it with the status the caller gets, ``ids()`` names it in the request log."""
        return NO_SPAN

    def span(self, name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False) -> Any:
        """A stage's span (a child of the current one), current while inside; an exception ends it in error."""
        return NO_SPAN

    def headers(self) -> dict[str, str] | None:
        """The current span's trace context for an outgoing call (None when there is nothing to pass on)."""
        return None

    def describe(self) -> str:
        return "off"

    def shutdown(self) -> None:
        """Export what is left (blocks up to the exporter's timeout)."""


NO_TRACING = Tracing()


def tracing_from_env(environ: Mapping[str, str] | None = None) -> Tracing:
    """``NO_TRACING`` unless the OpenTelemetry variables ask for traces; then the SDK, exporting OTLP/HTTP."""
    environ = os.environ if environ is None else environ
    url = otlp_traces_url(environ)
    if url is None:
        return NO_TRACING
    try:
        return OtelTracing(url)
    except ImportError as exc:
        raise StartupError(f"OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is missing ({exc}): "
                           "pip install 'ara-reranker-service[tracing]'") from exc


class OtelTracing(Tracing):
    """The OpenTelemetry SDK: a tracer provider of its own (none is installed globally), a batch span processor
    and the OTLP/HTTP exporter, all configured by the ``OTEL_*`` variables."""

    enabled = True

    def __init__(self, url: str) -> None:
        # Modules by their full names: ``opentelemetry`` itself is a namespace that eight distributions share.
        import opentelemetry.context as context
        import opentelemetry.trace as trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        self.provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER / _ARG
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.url = url
        self._tracer = self.provider.get_tracer("ara_reranker_server")
        self._propagator = TraceContextTextMapPropagator()
        self._context, self._trace = context, trace
        self._server, self._client = trace.SpanKind.SERVER, trace.SpanKind.CLIENT

    def continued(self, carrier):
        found = _trace_headers(carrier)
        if not found:
            return _NOTHING
        return _Attached(self._context, self._propagator.extract(found))

    def call(self, api: str, start_ns: int | None = None) -> "_CallSpan":
        span = self._tracer.start_span(f"rerank {api}", kind=self._server, start_time=start_ns)
        return _CallSpan(span, self._context, self._trace)

    def span(self, name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False):
        kind = self._client if client else self._trace.SpanKind.INTERNAL
        return self._tracer.start_as_current_span(name, attributes=attributes, kind=kind)

    def headers(self) -> dict[str, str] | None:
        # Only a sampled span's context: Triton traces every request that carries one, whatever its own rate.
        if not self._trace.get_current_span().get_span_context().trace_flags.sampled:
            return None
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier or None

    def describe(self) -> str:
        attributes = self.provider.resource.attributes
        return f"OTLP/HTTP to {self.url} as {attributes.get('service.name')}, sampler {self.provider.sampler.get_description()}"

    def shutdown(self) -> None:
        self.provider.shutdown()


def _trace_headers(carrier) -> dict[str, str]:
    """``traceparent`` / ``tracestate`` from HTTP headers (a mapping, case-insensitive in aiohttp) or gRPC
    metadata (key, value pairs, keys lowercase)."""
    if carrier is None:
        return {}
    if hasattr(carrier, "get"):
        return {key: value for key in TRACE_HEADERS if (value := carrier.get(key))}
    return {key: value for key, value in carrier if key in TRACE_HEADERS and value}


class _Attached:
    """Makes a context current while inside."""

    def __init__(self, context_api, ctx) -> None:
        self._api, self._ctx, self._token = context_api, ctx, None

    def __enter__(self) -> None:
        self._token = self._api.attach(self._ctx)

    def __exit__(self, *exc: object) -> None:
        self._api.detach(self._token)


class _CallSpan:
    """The span of one API call: current while inside, ended on the way out."""

    def __init__(self, span, context_api, trace_api) -> None:
        self.span = span
        self.recording = span.is_recording()
        self._api, self._trace, self._token = context_api, trace_api, None

    def __enter__(self) -> "_CallSpan":
        self._token = self._api.attach(self._trace.set_span_in_context(self.span))
        return self

    def __exit__(self, *exc: object) -> None:
        self._api.detach(self._token)
        self.span.end()

    def set_attribute(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self.span.add_event(name, attributes)

    def finish(self, status: str, error: str, attributes: Mapping[str, Any]) -> None:
        """The call's outcome: its attributes, and the status the caller got (gRPC's name, whatever the API).
        Any status but OK marks the span in error, with the message the caller got."""
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        self.span.set_attribute("reranker.status", status)
        if status != "OK":
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR, f"{status}: {error}" if error else status))

    def ids(self) -> dict[str, str]:
        context = self.span.get_span_context()
        if not context.is_valid:
            return {}
        return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def start_ns_of(started_perf: float) -> int:
    """A ``time.perf_counter()`` instant as the epoch nanoseconds spans are stamped with."""
    return time.time_ns() - int((time.perf_counter() - started_perf) * 1e9)
