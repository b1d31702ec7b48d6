"""Prometheus metrics, the Grafana dashboard and the alert rules, against the real gateway and tritonserver.

- A known load through the session gateway moves every counter by exactly what was sent: requests by code,
  documents, input tokens, truncations (gateway); rows, requests, real tokens (Triton and model.py).
- Every PromQL expression in deploy/monitoring/ (dashboard and alerts) parses, and each metric and label it
  names is exported by the running stack, so the dashboard cannot drift from the code. nv_gpu_* exist only
  on GPU nodes: those are checked against Triton's documented GPU metric names instead.
- With --log-format json the gateway writes one JSON line per request, with counts and never text.

The session gateway and Triton are shared with other tests: only deltas are asserted, never totals.
Model: the offline tiny model (random weights); only counts and shapes matter here.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
import promql_parser
import pytest
import yaml
from prometheus_client import generate_latest

from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc
from ara_reranker_server.api.calls import Calls
from ara_reranker_server.chunking import chunks_of
from ara_reranker_server.errors import InvalidRequest
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import free_port
from ara_reranker_server.metrics import GatewayMetrics
from ara_reranker_server.settings import Settings
from bench.prometheus import Scrape, families, parse, scrape
from tests.helpers import no_report_half_sent, wait_for, wait_triton_at_rest
from tools.arabic_text import QUERIES, SENTENCES, long_passage, mixed_passages, very_long_passage

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
MODEL = "ara_reranker"

# Triton's GPU metrics (Triton user guide, "Metrics" > "GPU Metrics"); exported only where a GPU is visible.
TRITON_GPU_METRICS = frozenset({
    "nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage", "nv_gpu_power_limit", "nv_energy_consumption",
})
# Series and labels Prometheus itself attaches to every scrape target.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                           "scrape_series_added"})
TARGET_LABELS = frozenset({"job", "instance"})
# Grafana's variables, replaced by what they stand for before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$model": MODEL}


# ---------------------------------------------------------------- scraping


def scrape_until(url: str, done: Callable[[Scrape], bool], what: str, shown: Callable[[Scrape], object],
                 timeout_s: float = 30.0) -> Scrape:
    """Scrape until ``done`` holds (Triton updates its counters as each request is released, which can come a moment
    after the client holds the response): that scrape. TimeoutError naming ``what`` and ``shown`` of the last scrape
    when it does not hold within ``timeout_s``."""
    return wait_for(lambda: scrape(url), done, what, timeout_s, shown=shown)


def model_samples(current: Scrape) -> dict[str, float]:
    return {name: current.value(name, model=MODEL) for name in ("ara_reranker_forward_tokens_sum", "ara_reranker_padded_tokens_total")}


def settled(url: str) -> Scrape:
    """A Triton scrape once it is at rest (``wait_triton_at_rest``: earlier tests' calls computed and reported)."""
    wait_triton_at_rest(url)
    return scrape(url)


# ---------------------------------------------------------------- the known load


@dataclass
class Sent:
    """What a load sent, computed on the client side (never read back from the gateway)."""

    ok_documents: list[int] = field(default_factory=list)  # documents per successful Rerank
    ok_tokens: list[int] = field(default_factory=list)  # input tokens per successful Rerank
    truncated: int = 0
    chunks: int = 0  # Triton requests: the gateway's chunks of each successful Rerank
    codes: dict[str, int] = field(default_factory=dict)  # Rerank calls by status code
    info_calls: int = 0


def rerank(stub, sent: Sent, reference, request: reranker_pb2.RerankRequest, chunk_size: int) -> grpc.StatusCode:
    """One Rerank; records what the gateway must count for it."""
    try:
        stub.Rerank(request, timeout=60)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
    sent.codes[code.name] = sent.codes.get(code.name, 0) + 1
    if code == grpc.StatusCode.OK:
        docs = list(request.documents)
        sent.ok_documents.append(len(docs))
        sent.ok_tokens.append(sum(len(reference.encode(request.query, d)) for d in docs))
        sent.truncated += sum(len(reference.tokenizer(request.query, d)["input_ids"]) > reference.max_length for d in docs)
        # The gateway's chunks: at most chunk_size pairs and max_chunk_tokens padded tokens each, longest pairs first.
        lengths = np.sort([len(reference.encode(request.query, d)) for d in docs])[::-1]
        sent.chunks += len(chunks_of(lengths, chunk_size, Settings().max_chunk_tokens))
    return code


def send_known_load(target: str, reference, rng: np.random.Generator, chunk_size: int) -> Sent:
    """Three good calls (one split into two chunks, one with an over-long document) and four refused ones."""
    sent = Sent()
    good = [
        reranker_pb2.RerankRequest(query=QUERIES[0], documents=mixed_passages(rng, 5), top_k=2),
        reranker_pb2.RerankRequest(query=QUERIES[1], documents=mixed_passages(rng, 13)),
        reranker_pb2.RerankRequest(query=QUERIES[2], documents=[very_long_passage(rng), SENTENCES[0], long_passage(rng)]),
    ]
    bad = [
        reranker_pb2.RerankRequest(query=QUERIES[3], documents=[]),
        reranker_pb2.RerankRequest(query="   ", documents=[SENTENCES[1]]),
        reranker_pb2.RerankRequest(query=QUERIES[3], documents=[SENTENCES[2]], top_k=0),
        reranker_pb2.RerankRequest(query=QUERIES[4], documents=[very_long_passage(rng)], truncation=reranker_pb2.TRUNCATION_NONE),
    ]
    with grpc.insecure_channel(target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        for request in good:
            assert rerank(stub, sent, reference, request, chunk_size) == grpc.StatusCode.OK
        for request in bad:
            assert rerank(stub, sent, reference, request, chunk_size) == grpc.StatusCode.INVALID_ARGUMENT
        for _ in range(2):
            stub.Info(reranker_pb2.InfoRequest(), timeout=10)
            sent.info_calls += 1
    return sent


def expected_buckets(values: list[int], les: list[float]) -> dict[float, float]:
    return {le: float(sum(v <= le for v in values)) for le in les}


# ---------------------------------------------------------------- counters move by exactly the load


def test_a_call_that_reached_no_model_adds_no_per_model_series():
    """A call refused before it named a model counts under model="" in the request series only: the per-model
    histograms (documents, tokens, stages) keep one series per served model, which dashboards and tests read as one."""
    metrics = GatewayMetrics(["tiny"])
    calls = Calls(None, metrics)  # a refused call never looks a model up
    calls.refused("reranker.v1", "r1", InvalidRequest("bad"), time.perf_counter())
    page = parse(prometheus_text(metrics))
    assert page.value("reranker_requests_total", code="INVALID_ARGUMENT", model="", api="reranker.v1") == 1
    for name in ("reranker_request_documents_count", "reranker_request_input_tokens_count", "reranker_stage_duration_seconds_count"):
        assert {dict(labels).get("model") for (n, labels) in page.samples if n == name} == {"tiny"}, name


def prometheus_text(metrics: GatewayMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_a_known_load_moves_every_counter_by_exactly_what_was_sent(gateway, triton, reference, rng):
    chunk_size = int(gateway.args["chunk_size"])
    gw0, tr0 = scrape(gateway.metrics_url), settled(triton.metrics_url)
    started = time.perf_counter()
    sent = send_known_load(gateway.target, reference, rng, chunk_size)
    wall_s = time.perf_counter() - started
    rows, requests = sum(sent.ok_documents), len(sent.ok_documents)
    moved = lambda s: {name: s.value(name, model=MODEL) - tr0.value(name, model=MODEL)  # noqa: E731
                       for name in ("nv_inference_count", "nv_inference_request_success", "ara_reranker_real_tokens_total")}
    tr1 = scrape_until(triton.metrics_url, lambda s: moved(s)["nv_inference_count"] >= rows
                       and moved(s)["nv_inference_request_success"] >= sent.chunks
                       # model.py reports from a thread after answering: all of it, none of it half sent
                       and moved(s)["ara_reranker_real_tokens_total"] >= sum(sent.ok_tokens) and no_report_half_sent(model_samples(s)),
                       f"Triton's and model.py's counters moved by {rows} rows, {sent.chunks} requests, {sum(sent.ok_tokens)} tokens",
                       lambda s: (moved(s), model_samples(s)))
    gw1 = scrape(gateway.metrics_url)

    def gw(name: str, **labels: str) -> float:
        return gw1.value(name, **labels) - gw0.value(name, **labels)

    def tr(name: str) -> float:
        return tr1.value(name, model=MODEL) - tr0.value(name, model=MODEL)

    # Gateway: requests by method and code, documents, tokens, truncations, stages.
    assert sent.codes == {"OK": 3, "INVALID_ARGUMENT": 4}
    for code in ("OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"):
        assert gw("reranker_requests_total", method="Rerank", code=code) == sent.codes.get(code, 0), code
    assert gw("reranker_requests_total", method="Info", code="OK") == sent.info_calls
    assert gw("reranker_requests_total") == sum(sent.codes.values()) + sent.info_calls
    assert gw("reranker_request_duration_seconds_count", method="Rerank") == sum(sent.codes.values())
    assert gw("reranker_documents_total") == rows
    assert gw("reranker_request_documents_count") == requests and gw("reranker_request_documents_sum") == rows
    assert gw("reranker_input_tokens_total") == sum(sent.ok_tokens)
    assert gw("reranker_request_input_tokens_count") == requests and gw("reranker_request_input_tokens_sum") == sum(sent.ok_tokens)
    assert sent.truncated == 1 and gw("reranker_documents_truncated_total") == sent.truncated
    for name, values in (("reranker_request_documents", sent.ok_documents), ("reranker_request_input_tokens", sent.ok_tokens)):
        before, after = gw0.buckets(name), gw1.buckets(name)
        assert {le: after[le] - before[le] for le in after} == expected_buckets(values, list(after)), name
    for stage in ("tokenization", "inference", "total"):
        assert gw("reranker_stage_duration_seconds_count", stage=stage) == requests, stage
    stages = {stage: gw("reranker_stage_duration_seconds_sum", stage=stage) for stage in ("tokenization", "inference", "total")}
    assert 0 < stages["tokenization"] + stages["inference"] <= stages["total"] * 1.001
    # Seconds, not milliseconds: the calls' durations add up to no more than the time spent sending them.
    assert stages["total"] <= gw("reranker_request_duration_seconds_sum", method="Rerank") <= wall_s
    assert gw1.value("reranker_requests_in_flight") == 0 and gw1.value("reranker_inflight_pairs") == 0
    assert gw1.value("reranker_triton_up", endpoint=triton.grpc_url) == 1

    # Triton: one inference request per chunk, one inference per document, nothing for refused calls.
    assert tr("nv_inference_count") == rows
    assert tr("nv_inference_request_success") == sent.chunks
    assert tr("nv_inference_request_failure") == 0
    assert requests <= tr("nv_inference_exec_count") <= sent.chunks  # calls were sequential; a call's chunks may batch
    # model.py: rows per execute, rows and tokens per forward pass, padding.
    assert tr("ara_reranker_execute_rows_count") == tr("nv_inference_exec_count")
    assert tr("ara_reranker_execute_rows_sum") == rows and tr("ara_reranker_forward_rows_sum") == rows
    assert tr("ara_reranker_real_tokens_total") == sum(sent.ok_tokens)  # padding stripped: exactly the real tokens
    assert tr("ara_reranker_padded_tokens_total") == tr("ara_reranker_forward_tokens_sum") >= sum(sent.ok_tokens)
    assert tr("ara_reranker_forward_duration_seconds_count") == tr("ara_reranker_forward_rows_count") >= tr("nv_inference_exec_count")
    assert 0 < tr1.value("ara_reranker_padding_ratio", model=MODEL) <= 1


# ---------------------------------------------------------------- dashboard and alerts stay true to the code


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for rule in group["rules"]]


def scrape_jobs() -> set[str]:
    return {job["job_name"] for job in yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"]}


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels", [])))  # collapsed rows hold their panels
    return out


def promql_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every PromQL expression of the dashboard and the alert rules."""
    found = [(f"dashboard panel {p['title']!r} {t['refId']}", t["expr"])
             for p in all_panels(dashboard()["panels"]) for t in p.get("targets", [])]
    found += [(f"alert {r.get('alert') or r.get('record')}", r["expr"]) for r in alert_rules()]
    return found


def with_grafana_variables(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + variable[1:] + "}", value).replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, op, value)]) of every vector selector in ``expr``, parsed by promql-parser."""
    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [(m.name, str(m.op).rsplit(".", 1)[-1], m.value) for m in node.matchers.matchers]
            name = node.name or next((v for label, op, v in matchers if label == "__name__" and op == "Equal"), None)
            found.append((name, [m for m in matchers if m[0] != "__name__"]))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def problems_with(name: str | None, matchers, exported: dict[str, dict[str, set[str]]], jobs: set[str]) -> list[str]:
    """What is wrong with one selector: a metric or label the stack does not export, a value it never takes."""
    if name is None:
        return ["a selector without a fixed metric name"]
    if name.startswith(("nv_gpu_", "nv_energy_")):
        return [] if name in TRITON_GPU_METRICS else [f"{name} is not one of Triton's GPU metrics"]
    if name in SCRAPE_SERIES:
        labels: dict[str, set[str]] = {}
    elif name not in exported:
        return [f"{name} is not exported"]
    else:
        labels = exported[name]
    out = []
    for label, op, value in matchers:
        if label == "job":
            wanted = value.split("|") if op == "Re" else [value]
            out += [f"job {job!r} is not a job of prometheus.yml" for job in wanted if op in ("Equal", "Re") and job not in jobs]
        elif label in TARGET_LABELS:
            continue
        elif label not in labels:
            out.append(f"{name} has no label {label!r}")
        elif op == "Equal" and value not in labels[label]:
            out.append(f"{name}{{{label}}} never takes the value {value!r} (seen: {sorted(labels[label])})")
    return out


@pytest.fixture(scope="module")
def exported(gateway, triton, reference, rng) -> dict[str, dict[str, set[str]]]:
    """name -> label -> values, from the running gateway and Triton after a little traffic."""
    with grpc.insecure_channel(gateway.target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        stub.Rerank(reranker_pb2.RerankRequest(query=QUERIES[0], documents=mixed_passages(rng, 3)), timeout=60)
    merged = scrape(gateway.metrics_url).labels_of()
    for name, labels in scrape(triton.metrics_url).labels_of().items():
        assert name not in merged, f"{name} is exported by both the gateway and Triton"
        merged[name] = labels
    return merged


def test_every_promql_expression_names_only_metrics_and_labels_the_stack_exports(exported):
    jobs = scrape_jobs()
    expressions = promql_expressions()
    assert len(expressions) >= 30
    problems = []
    for where, expr in expressions:
        try:
            found = selectors(with_grafana_variables(expr))
        except ValueError as exc:  # promql-parser's syntax errors
            problems.append(f"{where}: does not parse: {exc}")
            continue
        assert found, f"{where}: no metric in {expr!r}"
        for name, matchers in found:
            problems += [f"{where}: {p}" for p in problems_with(name, matchers, exported, jobs)]
    assert not problems, "\n".join(problems)


def test_the_drift_check_catches_a_renamed_metric_a_wrong_label_value_and_an_unknown_job():
    """The checker above, on a made-up export: it must flag what a stale dashboard would contain."""
    exported = {"reranker_requests_total": {"method": {"Rerank"}, "code": {"OK"}}}
    jobs = {"triton"}

    def check(expr: str) -> list[str]:
        return [p for name, matchers in selectors(expr) for p in problems_with(name, matchers, exported, jobs)]

    assert check('sum(rate(reranker_requests_total{method="Rerank",code!="OK"}[5m]))') == []
    assert check("rate(reranker_request_total[5m])") == ["reranker_request_total is not exported"]
    assert check('reranker_requests_total{status="OK"}') == ["reranker_requests_total has no label 'status'"]
    assert check('reranker_requests_total{method="rerank"}')[0].startswith("reranker_requests_total{method} never takes")
    assert check('up{job=~"triton|gateway"}') == ["job 'gateway' is not a job of prometheus.yml"]
    assert check("nv_gpu_utilization + nv_gpu_util") == ["nv_gpu_util is not one of Triton's GPU metrics"]
    with pytest.raises(ValueError):
        selectors("sum(rate(reranker_requests_total[5m])")


def test_dashboard_variables_query_exported_metrics(exported):
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
        assert match, f"variable {variable['name']}: unsupported query {variable['query']!r}"
        name, label = match.groups()
        assert name in exported and label in exported[name], f"variable {variable['name']}: {name} has no label {label}"
        assert variable["current"]["value"] in exported[name][label]


def test_dashboard_shows_every_gateway_and_model_metric_and_the_triton_ones_asked_for(gateway, triton):
    """The dashboard covers every reranker_* and ara_reranker_* family, and Triton's queue, batch and GPU metrics."""
    names = {name for _, expr in promql_expressions() for name, _ in selectors(with_grafana_variables(expr))}
    shown = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in names}  # as family names
    ours = {f for f in families(gateway.metrics_url) | families(triton.metrics_url)
            if f.startswith(("reranker_", "ara_reranker_")) and not f.endswith("_created")}  # prometheus_client's start times
    assert ours and not ours - shown, f"not on the dashboard or in an alert: {sorted(ours - shown)}"
    asked = {"nv_inference_queue_duration_us", "nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success",
             "nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "up"}
    assert not asked - names, sorted(asked - names)


def test_alert_rules_cover_errors_latency_and_triton_down():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
    names_in = {alert: {n for n, _ in selectors(rule["expr"])} for alert, rule in rules.items()}
    assert "reranker_requests_total" in names_in["RerankerHighErrorRate"]
    assert "reranker_request_duration_seconds_bucket" in names_in["RerankerHighP99Latency"]
    assert "histogram_quantile(0.99" in rules["RerankerHighP99Latency"]["expr"]
    assert {"up"} == names_in["TritonDown"] and "reranker_triton_up" in names_in["RerankerTritonEndpointDown"]
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"] and {"reranker-gateway", "triton"} <= scrape_jobs()


def test_dashboard_is_importable_with_a_datasource_variable():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = all_panels(board["panels"])
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"]), panel["title"]


# ---------------------------------------------------------------- a gateway of our own: JSON log, auth, endpoint health

API_KEY = "metrics-test-key"


@pytest.fixture(scope="module")
def dead_endpoint() -> str:
    """A loopback address where nothing listens."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def json_gateway(triton, dead_endpoint, tiny_model_dir, tmp_path_factory):
    """A gateway of its own: JSON request log, an API key, and a second Triton endpoint that is down."""
    args = {"triton_endpoints": f"{triton.grpc_url},{dead_endpoint}", "tokenizer": str(tiny_model_dir), "log_format": "json",
            "api_keys": API_KEY, "chunk_size": "8"}
    with GatewayProcess(args, log_path=tmp_path_factory.mktemp("json-gateway") / "g.log") as process:
        yield process


def request_lines(log_path: Path) -> list[dict]:
    """The log's lines that are whole JSON objects carrying a request id."""
    out = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "request_id" in entry:
            out.append(entry)
    return out


def test_json_log_has_one_line_per_request_with_counts_and_no_text(json_gateway, reference, rng):
    query = QUERIES[1]
    calls = [  # (request id, request, expected status)
        (f"log-{uuid.uuid4().hex}", reranker_pb2.RerankRequest(query=query, documents=mixed_passages(rng, 4)), "OK"),
        (f"log-{uuid.uuid4().hex}", reranker_pb2.RerankRequest(query=query, documents=[long_passage(rng), SENTENCES[3]]), "OK"),
        (f"log-{uuid.uuid4().hex}", reranker_pb2.RerankRequest(query=query, documents=[SENTENCES[4]], top_k=0), "INVALID_ARGUMENT"),
    ]
    with grpc.insecure_channel(json_gateway.target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        for request_id, request, status in calls:
            metadata = (("authorization", f"Bearer {API_KEY}"), ("x-request-id", request_id))
            try:
                stub.Rerank(request, timeout=60, metadata=metadata)
                assert status == "OK"
            except grpc.RpcError as exc:
                assert exc.code().name == status
    ids = {request_id for request_id, _, _ in calls}
    # Each line is written before the call is answered; allow for buffering.
    ours = wait_for(lambda: [e for e in request_lines(json_gateway.log_path) if e["request_id"] in ids], lambda lines: len(lines) >= len(calls),
                    f"a log line for each of the {len(calls)} requests", detail=json_gateway.log_tail)
    assert len(ours) == len(calls), f"want one whole-JSON line per request:\n{json_gateway.log_tail()}"
    entries = {e["request_id"]: e for e in ours}
    for request_id, request, status in calls:
        entry = entries[request_id]
        assert entry["status"] == status and entry["documents"] == len(request.documents)
        assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] >= 0
        expected_tokens = sum(len(reference.encode(query, d)) for d in request.documents) if status == "OK" else None
        assert entry["tokens"] == expected_tokens
    text = json_gateway.log_path.read_text(encoding="utf-8")
    for _, request, _ in calls:
        for secret in [request.query, *request.documents]:
            assert secret not in text, "the request log must not carry query or document text"
    assert API_KEY not in text


def test_unauthenticated_calls_are_counted_by_code(json_gateway):
    before = scrape(json_gateway.metrics_url)
    with grpc.insecure_channel(json_gateway.target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as err:
                stub.Rerank(reranker_pb2.RerankRequest(query=QUERIES[0], documents=[SENTENCES[0]]), timeout=10, metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = scrape(json_gateway.metrics_url)
    counted = after.value("reranker_requests_total", method="Rerank", code="UNAUTHENTICATED") - before.value(
        "reranker_requests_total", method="Rerank", code="UNAUTHENTICATED")
    assert counted == 2
    assert after.value("reranker_requests_total", code="OK") == before.value("reranker_requests_total", code="OK")


def test_triton_health_is_exported_per_endpoint(json_gateway, triton, dead_endpoint):
    up = lambda s: {endpoint: s.value("reranker_triton_up", endpoint=endpoint) for endpoint in (triton.grpc_url, dead_endpoint)}  # noqa: E731
    current = scrape_until(json_gateway.metrics_url, lambda s: up(s)[triton.grpc_url] == 1, "reranker_triton_up 1 for the live Triton", up)
    assert current.value("reranker_triton_up", endpoint=triton.grpc_url) == 1
    assert current.labels_of()["reranker_triton_up"]["endpoint"] == {triton.grpc_url, dead_endpoint}
    assert current.value("reranker_triton_up", endpoint=dead_endpoint) == 0


def test_inflight_gauges_show_the_work_admitted_while_a_call_runs(gateway, rng):
    """reranker_inflight_pairs / _tokens read the admission bounds at scrape time: non-zero while a
    call is being scored, back to zero after it."""
    documents = [long_passage(rng) for _ in range(300)]
    seen = {"reranker_inflight_pairs": 0.0, "reranker_inflight_tokens": 0.0}
    with grpc.insecure_channel(gateway.target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        call = stub.Rerank.future(reranker_pb2.RerankRequest(query=QUERIES[0], documents=documents), timeout=120)
        while not call.done():
            current = scrape(gateway.metrics_url)
            for name in seen:
                seen[name] = max(seen[name], current.value(name))
        call.result()
    assert seen["reranker_inflight_pairs"] == len(documents)
    assert seen["reranker_inflight_tokens"] > 300 * 500  # ~1,000 tokens per pair
    inflight = lambda s: {name: s.value(name) for name in seen}  # noqa: E731
    after = scrape_until(gateway.metrics_url, lambda s: s.value("reranker_inflight_pairs") == 0, "no pair in flight", inflight)
    assert after.value("reranker_inflight_pairs") == 0 and after.value("reranker_inflight_tokens") == 0
