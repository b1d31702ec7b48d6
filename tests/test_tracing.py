"""One trace per request, from the caller through the gateway into Triton (OpenTelemetry), with real parts: an
OTLP/HTTP receiver on loopback (tools/otlp_receiver.py: protobuf from the gateway, JSON from Triton), a real
tritonserver started with OpenTelemetry tracing as ``make run`` starts it, and real gateways.

Spans are awaited by bounded polling (the exporters batch on a schedule, shortened here with OTEL_BSP_SCHEDULE_DELAY).
Each call here makes two Triton requests: the bundled Triton 2.51 misses the trace context of about one gRPC request
in a hundred (measured: it then starts a trace of its own, or with rate=0 traces nothing), so a call's trace is
checked to hold Triton's spans under at least one of its two Triton calls, and all of them under one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TRITON_SERVICE_NAME, TritonOptions, TritonServer, trace_config
from ara_reranker_server.tracing import DEFAULT_SERVICE_NAME, NO_TRACING, otlp_traces_url, tracing_from_env
from tools.arabic_text import MODEL_CARD_CANDIDATES, MODEL_CARD_QUERY
from tools.otlp_receiver import OtlpReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parent.parent
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
DOCUMENTS = MODEL_CARD_CANDIDATES * 3  # 12 documents: two chunks of 8 and 4, so two Triton calls
STAGES = {"admission", "tokenization", "triton infer", "ranking"}


def traceparent(span_id: str, trace_id: str = CALLER_TRACE) -> str:
    return f"00-{trace_id}-{span_id}-01"


def otel_env(receiver: OtlpReceiver, **more: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100", **more}


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def traced_triton(tiny_model_dir, receiver, tmp_path_factory):
    """A tritonserver started with OpenTelemetry tracing, as ``make run`` starts it with OTEL_EXPORTER_OTLP_ENDPOINT set."""
    log = tmp_path_factory.mktemp("traced-triton") / "tritonserver.log"
    with TritonServer(TritonOptions(model_dir=tiny_model_dir, log_path=log, trace_config=trace_config(otel_env(receiver)))) as server:
        yield server


@pytest.fixture(scope="module")
def traced_gateway(traced_triton, tiny_model_dir, receiver, tmp_path_factory):
    args = {"triton_endpoints": traced_triton.grpc_url, "tokenizer": str(tiny_model_dir), "chunk_size": "8",
            "log_format": "json"}
    with GatewayProcess(args, env=dict(os.environ, **otel_env(receiver)),
                        log_path=tmp_path_factory.mktemp("traced-gateway") / "gateway.log") as process:
        yield process


def rerank_grpc(gateway: GatewayProcess, metadata: list[tuple[str, str]], **fields) -> grpc.StatusCode:
    with grpc.insecure_channel(gateway.target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        request = reranker_pb2.RerankRequest(query=MODEL_CARD_QUERY, documents=DOCUMENTS, **fields)
        try:
            stub.Rerank(request, metadata=metadata, timeout=60)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def post(gateway: GatewayProcess, path: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(gateway.http_url + path, data=body, method="POST",
                                     headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def complete(spans: list[ReceivedSpan], root_name: str) -> bool:
    """The gateway's call span has arrived, and one of its Triton calls (at least) has Triton's three spans below it."""
    names = [s.name for s in spans]
    if root_name not in names:
        return False
    by_parent: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        by_parent.setdefault(s.parent_span_id, []).append(s)
    for call in (s for s in spans if s.name == "triton infer"):
        requests = [c for c in by_parent.get(call.span_id, []) if c.name == "InferRequest"]
        models = [m for r in requests for m in by_parent.get(r.span_id, [])]
        if any(c.name == "compute" for m in models for c in by_parent.get(m.span_id, [])):
            return True
    return False


def one_tree(spans: list[ReceivedSpan], parent_of_root: str) -> ReceivedSpan:
    """Every span's parent is in the trace, but the root's, which is ``parent_of_root``; the root."""
    ids = {s.span_id for s in spans}
    assert len(ids) == len(spans), "span ids repeat"
    roots = [s for s in spans if s.parent_span_id not in ids]
    assert len(roots) == 1, [(s.name, s.parent_span_id) for s in roots]
    assert roots[0].parent_span_id == parent_of_root
    return roots[0]


def check_traced_call(spans: list[ReceivedSpan], parent_of_root: str, api: str) -> ReceivedSpan:
    root = one_tree(spans, parent_of_root)
    assert root.service == DEFAULT_SERVICE_NAME and root.name == f"rerank {api}"
    assert root.attributes["reranker.status"] == "OK" and root.status == "UNSET"
    assert root.attributes["reranker.api"] == api and root.attributes["reranker.documents"] == len(DOCUMENTS)
    assert root.attributes["reranker.tokens"] > 0 and root.attributes["reranker.model"]
    by_id = {s.span_id: s for s in spans}
    gateway_spans = [s for s in spans if s.service == DEFAULT_SERVICE_NAME]
    assert STAGES <= {s.name for s in gateway_spans}
    assert all(s.encoding == "protobuf" for s in gateway_spans)
    calls = [s for s in gateway_spans if s.name == "triton infer"]
    assert len(calls) == 2 and sorted(s.attributes["reranker.rows"] for s in calls) == [4, 8]
    assert all(s.attributes["triton.endpoint"] and s.attributes["triton.tries"] == 1 for s in calls)
    # Triton's spans (OTLP/JSON) hang below the gateway's Triton-call spans: InferRequest -> model -> compute.
    triton_roots = [s for s in spans if s.name == "InferRequest"]
    assert 1 <= len(triton_roots) <= 2 and len({s.parent_span_id for s in triton_roots}) == len(triton_roots)
    for request in triton_roots:
        assert request.service == TRITON_SERVICE_NAME and request.encoding == "json"
        assert by_id[request.parent_span_id].name == "triton infer"
    assert {s.name for s in spans if s.service == TRITON_SERVICE_NAME} == {"InferRequest", "ara_reranker", "compute"}
    return root


def request_log(gateway: GatewayProcess) -> list[dict]:
    lines = [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line.startswith("{")]
    return [entry for entry in lines if entry.get("logger") == "ara_reranker_server.requests"]


def test_a_grpc_call_with_traceparent_is_one_trace_through_gateway_and_triton(traced_gateway, receiver):
    caller_span = "00f067aa0ba902b7"
    assert rerank_grpc(traced_gateway, [("traceparent", traceparent(caller_span)), ("x-request-id", "traced-grpc")]) == grpc.StatusCode.OK
    spans = receiver.wait_for(lambda all_: complete([s for s in all_ if s.trace_id == CALLER_TRACE], "rerank reranker.v1"))
    root = check_traced_call([s for s in spans if s.trace_id == CALLER_TRACE], caller_span, "reranker.v1")
    # The request log line leads to the trace.
    entry = next(e for e in request_log(traced_gateway) if e["request_id"] == "traced-grpc")
    assert entry["trace_id"] == CALLER_TRACE and entry["span_id"] == root.span_id


def test_an_http_call_with_traceparent_is_one_trace_too(traced_gateway, receiver):
    trace_id, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    body = json.dumps({"model": "tiny", "query": MODEL_CARD_QUERY, "documents": DOCUMENTS}).encode()
    status = post(traced_gateway, "/v2/rerank", body, {"traceparent": traceparent(caller_span, trace_id),
                                                         "tracestate": "caller=1"})
    assert status == 200
    spans = receiver.wait_for(lambda all_: complete([s for s in all_ if s.trace_id == trace_id], "rerank v2/rerank"))
    check_traced_call([s for s in spans if s.trace_id == trace_id], caller_span, "v2/rerank")


def test_a_call_without_traceparent_starts_its_own_trace(traced_gateway, receiver):
    known = {s.trace_id for s in receiver.snapshot()}
    assert rerank_grpc(traced_gateway, [("x-request-id", "untraced-caller")]) == grpc.StatusCode.OK
    entry = next(e for e in request_log(traced_gateway) if e["request_id"] == "untraced-caller")
    trace_id = entry["trace_id"]
    assert trace_id not in known and len(trace_id) == 32
    spans = receiver.wait_for(lambda all_: complete([s for s in all_ if s.trace_id == trace_id], "rerank reranker.v1"))
    root = check_traced_call([s for s in spans if s.trace_id == trace_id], "", "reranker.v1")
    assert root.span_id == entry["span_id"]


def test_refused_calls_are_traced_with_the_status_the_caller_got(traced_gateway, receiver):
    trace_id = "5b8aa5a2d2c872e8321cf37308d69df2"
    # gRPC: fields that do not go together (the job is never built).
    code = rerank_grpc(traced_gateway, [("traceparent", traceparent("051581bf3cb55c13", trace_id))], window_tokens=64)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # HTTP: a body that is not JSON (refused before it becomes a call of the core).
    assert post(traced_gateway, "/v1/rerank", b"{not json", {"traceparent": traceparent("1111111111111111", trace_id)}) == 400
    spans = receiver.wait_for(lambda all_: len([s for s in all_ if s.trace_id == trace_id]) >= 2)
    refused = {s.parent_span_id: s for s in spans if s.trace_id == trace_id}
    assert set(refused) == {"051581bf3cb55c13", "1111111111111111"}
    for parent, api in (("051581bf3cb55c13", "reranker.v1"), ("1111111111111111", "v1/rerank")):
        span = refused[parent]
        assert span.name == f"rerank {api}" and span.attributes["reranker.status"] == "INVALID_ARGUMENT"
        assert span.status == "ERROR" and span.status_message.startswith("INVALID_ARGUMENT: ")
    assert "TRUNCATION_SPLIT" in refused["051581bf3cb55c13"].status_message


def test_with_tracing_off_no_exporter_runs(traced_triton, tiny_model_dir, tmp_path):
    """OTEL_SDK_DISABLED=true beside an endpoint: the gateway exports nothing, even at shutdown (where a batch
    exporter flushes), and its request log carries no trace ids."""
    with OtlpReceiver() as quiet:
        args = {"triton_endpoints": traced_triton.grpc_url, "tokenizer": str(tiny_model_dir), "log_format": "json"}
        gateway = GatewayProcess(args, env=dict(os.environ, **otel_env(quiet, OTEL_SDK_DISABLED="true")),
                                 log_path=tmp_path / "gateway.log")
        with gateway:
            assert rerank_grpc(gateway, [("traceparent", traceparent("00f067aa0ba902b7")), ("x-request-id", "off")]) == grpc.StatusCode.OK
            entry = next(e for e in request_log(gateway) if e["request_id"] == "off")
        assert gateway.process is None  # stopped: whatever an exporter held would have been sent by now
        assert quiet.posts == 0
        assert "trace_id" not in entry
        assert "tracing off" in gateway.log_path.read_text()


@pytest.mark.unit
def test_tracing_is_off_by_default_and_imports_no_opentelemetry():
    """Off, the gateway imports no OpenTelemetry module at all: no SDK object exists on the hot path."""
    script = ("import sys; import ara_reranker_server.gateway as g; from ara_reranker_server.tracing import tracing_from_env, NO_TRACING; "
              "t = tracing_from_env({}); assert t is NO_TRACING, t; "
              "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry')); assert not loaded, loaded")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr


@pytest.mark.unit
def test_the_opentelemetry_variables_decide():
    assert otlp_traces_url({}) is None and tracing_from_env({}) is NO_TRACING
    assert otlp_traces_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}) == "http://collector:4318/v1/traces"
    assert otlp_traces_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/traces"}) == "http://b:4318/traces"
    assert otlp_traces_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"}) is None
    assert otlp_traces_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "none"}) is None
    assert trace_config({}) == ()
    config = trace_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SERVICE_NAME": "rr",
                           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=x"})
    assert config[:5] == ("mode=opentelemetry", "opentelemetry,url=http://collector:4318/v1/traces", "rate=0", "count=-1",
                          "level=TIMESTAMPS")
    assert config[5:] == ("opentelemetry,resource=deployment.environment=prod", "opentelemetry,resource=service.name=ara-reranker-triton")
