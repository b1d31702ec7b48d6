"""A small OTLP/HTTP trace receiver on loopback, for the tracing tests and the tracing benchmark: it takes
``POST /v1/traces`` in both OTLP encodings (protobuf, as the gateway's exporter sends it, decoded with
``opentelemetry-proto``; JSON with hex ids, as Triton sends it) and keeps the spans, flattened.

    with OtlpReceiver() as receiver:          # OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
        ...
        spans = receiver.wait_for(lambda spans: len(spans) >= 3, timeout_s=20)
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["OtlpReceiver", "ReceivedSpan"]

_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR", "STATUS_CODE_UNSET": "UNSET", "STATUS_CODE_OK": "OK", "STATUS_CODE_ERROR": "ERROR"}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "UNSET"  # UNSET, OK or ERROR
    status_message: str = ""
    encoding: str = "protobuf"  # how it arrived: protobuf or json


class OtlpReceiver:
    """A threaded HTTP server on ``host``, a free port; a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.spans: list[ReceivedSpan] = []
        self.posts = 0  # export requests received, whatever their content
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                json_body = "json" in (self.headers.get("Content-Type") or "")
                try:
                    spans = _from_json(body) if json_body else _from_protobuf(body)
                except Exception as exc:  # a body we cannot read: say so to the sender
                    self.send_error(400, f"cannot decode the export: {exc}")
                    return
                receiver._add(spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/json" if json_body else "application/x-protobuf")
                self.send_header("Content-Length", "2" if json_body else "0")
                self.end_headers()
                if json_body:
                    self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT (traces go to ``/v1/traces`` under it)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "OtlpReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.posts += 1
            self.spans.extend(spans)

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.snapshot() if s.trace_id == trace_id]

    def wait_for(self, condition: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 30.0,
                 poll_s: float = 0.05) -> list[ReceivedSpan]:
        """Poll the spans received until ``condition(spans)`` holds; TimeoutError (listing them) after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.snapshot()
            if condition(spans):
                return spans
            if time.monotonic() > deadline:
                listed = "\n".join(f"  {s.service} {s.name} {s.trace_id}/{s.span_id} parent {s.parent_span_id or '-'}" for s in spans)
                raise TimeoutError(f"the spans received did not satisfy the condition after {timeout_s:.0f}s:\n{listed}")
            time.sleep(poll_s)


def _from_protobuf(body: bytes) -> list[ReceivedSpan]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(body)
    out = []
    for resource_spans in request.resource_spans:
        service = next((a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(ReceivedSpan(
                    service=service, name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(), attributes={a.key: _pb_value(a.value) for a in span.attributes},
                    status=_STATUS[span.status.code], status_message=span.status.message, encoding="protobuf",
                ))
    return out


def _pb_value(value) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _from_json(body: bytes) -> list[ReceivedSpan]:
    """OTLP/JSON: ids are hex strings, not base64 (the OTLP JSON encoding's one exception to protobuf's JSON mapping)."""
    out = []
    for resource_spans in json.loads(body).get("resourceSpans", []):
        attributes = _json_attributes(resource_spans.get("resource", {}).get("attributes", []))
        service = str(attributes.get("service.name", ""))
        for scope_spans in resource_spans.get("scopeSpans", resource_spans.get("instrumentationLibrarySpans", [])):
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                out.append(ReceivedSpan(
                    service=service, name=span.get("name", ""), trace_id=span.get("traceId", "").lower(),
                    span_id=span.get("spanId", "").lower(), parent_span_id=span.get("parentSpanId", "").lower(),
                    attributes=_json_attributes(span.get("attributes", [])), status=_STATUS.get(status.get("code", 0), "UNSET"),
                    status_message=status.get("message", ""), encoding="json",
                ))
    return out


def _json_attributes(attributes: list[dict]) -> dict[str, Any]:
    return {a["key"]: _json_value(a.get("value", {})) for a in attributes}


def _json_value(value: dict) -> Any:
    if "arrayValue" in value:
        return [_json_value(v) for v in value["arrayValue"].get("values", [])]
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])  # a string in OTLP/JSON (64-bit)
    return None
