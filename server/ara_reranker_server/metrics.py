"""Every Prometheus metric the gateway exports (prefix ``reranker_``), in one place.

Triton's own ``nv_inference_*`` metrics and the model's ``ara_reranker_*`` metrics (model.py) are on
Triton's metrics port; deploy/monitoring/ scrapes both.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ara_reranker_server.errors import StartupError

__all__ = ["GatewayMetrics", "CallSeries", "APIS", "NO_MODEL", "serve_metrics"]

# ~100 us to ~40 s, x1.5 per bucket.
DURATION_BUCKETS = tuple(round(0.0001 * 1.5**k, 6) for k in range(0, 33))
# Powers of two: documents per request up to 4096, tokens up to ~2M.
DOCUMENT_BUCKETS = tuple(float(2**k) for k in range(0, 13))
TOKEN_BUCKETS = tuple(float(2**k) for k in range(4, 22))
# The status codes each call can end with (server/ara_reranker_server/errors.py, server/ara_reranker_server/api/calls.py and the API-key checks),
# named as gRPC names them whatever the API: an HTTP 400 is counted INVALID_ARGUMENT, a 429
# RESOURCE_EXHAUSTED (server/ara_reranker_server/errors.py ANSWERS), so one alert covers every API.
ANSWERED_CODES = {
    "Rerank": ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED",
               "INTERNAL", "CANCELLED", "UNAUTHENTICATED"),
    "Info": ("OK", "UNAUTHENTICATED"),
}
# The API a call came through (the ``api`` label): the gRPC packages, the HTTP paths of the Cohere v1 / Jina
# and Cohere v2 dialects (vLLM's bodies on those paths among them), TEI (/rerank, /info), NVIDIA NIM
# (/v1/ranking ..., /v1/models) and vLLM (/score, /v1/score, /rerank with documents).
APIS = ("reranker.v1", "tei.v1", "v1/rerank", "v2/rerank", "tei", "nim", "vllm")
_INFO_APIS = ("reranker.v1", "tei.v1", "tei", "nim")
# The model label of calls that reached no model: Info, refused keys, names no model is served under
# (never the name sent: callers must not be able to grow the label set).
NO_MODEL = ""


class CallSeries:
    """The series one Rerank call of a model through an API moves, looked up once (``GatewayMetrics.call_series``):
    a call then only counts, with no label lookups of its own. Calls that reached no model (NO_MODEL) move only the
    request count and duration: the per-model series (documents, tokens, stages, cache) have no such model."""

    def __init__(self, metrics: "GatewayMetrics", model: str, api: str) -> None:
        self.codes = {code: metrics.requests.labels("Rerank", code, model, api) for code in ANSWERED_CODES["Rerank"]}
        self.duration = metrics.request_duration.labels("Rerank", model, api)
        self.outcome = OutcomeSeries(metrics, model) if model != NO_MODEL else None


class OutcomeSeries:
    """A served model's series that a successful Rerank call moves."""

    def __init__(self, metrics: "GatewayMetrics", model: str) -> None:
        self.tokenization, self.inference, self.total = (metrics.stage_duration.labels(stage, model)
                                                         for stage in ("tokenization", "inference", "total"))
        self.documents = metrics.documents.labels(model)
        self.documents_total = metrics.documents_total.labels(model)
        self.input_tokens = metrics.input_tokens.labels(model)
        self.input_tokens_total = metrics.input_tokens_total.labels(model)
        self.truncated = metrics.truncated.labels(model)
        self.cache_hits = metrics.cache_hits.labels(model)
        self.cache_misses = metrics.cache_misses.labels(model)


class GatewayMetrics:
    """The gateway's metrics, registered on their own registry (one per gateway, so tests can run several).
    Per-request series carry the ``model`` that served the call (the name it is served under)."""

    def __init__(self, models: list[str] | None = None, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.models = list(models or [NO_MODEL])
        self._calls: dict[tuple[str, str], CallSeries] = {}
        r = self.registry
        self.requests = Counter("reranker_requests", "Calls answered, by method, status code (gRPC's names), model and API",
                                ["method", "code", "model", "api"], registry=r)
        self.request_duration = Histogram(
            "reranker_request_duration_seconds", "Whole call duration, by method, model and API", ["method", "model", "api"],
            buckets=DURATION_BUCKETS, registry=r
        )
        self.stage_duration = Histogram(
            "reranker_stage_duration_seconds",
            "Duration of one stage of a successful Rerank: tokenization, inference (Triton round trips), total",
            ["stage", "model"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.documents = Histogram("reranker_request_documents", "Documents per Rerank request", ["model"],
                                   buckets=DOCUMENT_BUCKETS, registry=r)
        self.documents_total = Counter("reranker_documents", "Documents scored", ["model"], registry=r)
        self.input_tokens = Histogram("reranker_request_input_tokens", "Input tokens per Rerank request", ["model"],
                                      buckets=TOKEN_BUCKETS, registry=r)
        self.input_tokens_total = Counter("reranker_input_tokens", "Input tokens of the pairs ranked (pairs answered from the score cache included)", ["model"], registry=r)
        self.truncated = Counter("reranker_documents_truncated", "Documents cut to the model's max input length", ["model"], registry=r)
        self.cache_hits = Counter("reranker_score_cache_hits", "Documents answered from the score cache", ["model"], registry=r)
        self.cache_misses = Counter("reranker_score_cache_misses",
                                    "Documents not in the score cache (sent to the model; all of them when it is off)",
                                    ["model"], registry=r)
        self.cache_entries = Gauge("reranker_score_cache_entries", "Pairs held by the score cache", registry=r)
        self.in_flight = Gauge("reranker_requests_in_flight", "Rerank calls being served now (every API)", registry=r)
        self.inflight_pairs = Gauge("reranker_inflight_pairs", "Pairs admitted and not yet answered", registry=r)
        self.inflight_tokens = Gauge("reranker_inflight_tokens", "Tokens admitted to Triton and not yet answered", registry=r)
        self.dispatch_queued = Gauge("reranker_dispatch_queued_chunks",
                                     "Chunks waiting in the gateway's queue in front of Triton (dispatch_window_tokens), by model",
                                     ["model"], registry=r)
        self.triton_up = Gauge("reranker_triton_up", "Whether a Triton endpoint has the model ready (1) or not (0)",
                               ["endpoint", "model"], registry=r)
        # Export every series the gateway can move at 0 from the start: a series that appears only with its
        # first error hides that error from rate()/increase(), and from the error-rate alert.
        for model in self.models:
            for stage in ("tokenization", "inference", "total"):
                self.stage_duration.labels(stage, model)
            for metric in (self.documents, self.documents_total, self.input_tokens, self.input_tokens_total, self.truncated,
                           self.cache_hits, self.cache_misses):
                metric.labels(model)
            for api in APIS:
                self.request_duration.labels("Rerank", model, api)  # Info is not timed
                for code in ANSWERED_CODES["Rerank"]:
                    self.requests.labels("Rerank", code, model, api)
        for api in APIS:
            for method, codes in ANSWERED_CODES.items():
                if method == "Rerank" or api in _INFO_APIS:
                    for code in codes:
                        self.requests.labels(method, code, NO_MODEL, api)

    def call_series(self, model: str, api: str) -> CallSeries:
        """The series of a Rerank call of ``model`` (a served model's name, or NO_MODEL) through ``api`` (one of APIS)."""
        series = self._calls.get((model, api))
        if series is None:
            series = self._calls[model, api] = CallSeries(self, model, api)
        return series

    def watch_admission(self, pairs, tokens) -> None:
        """Read the admission bounds' counts at scrape time (``Admission.in_flight``), so they are never stale."""
        self.inflight_pairs.set_function(lambda: pairs.in_flight)
        self.inflight_tokens.set_function(lambda: tokens.in_flight)

    def watch_dispatch(self, model: str, dispatcher) -> None:
        """Read a model's dispatch queue (``Dispatcher.waiting``) at scrape time: what waits for room at Triton, an
        observable for tests and dashboards alike."""
        self.dispatch_queued.labels(model).set_function(lambda: dispatcher.waiting)

    def watch_cache(self, cache) -> None:
        """Read the score cache's size at scrape time."""
        self.cache_entries.set_function(lambda: len(cache))

    def set_triton_health(self, endpoint: str, model: str, up: bool) -> None:
        self.triton_up.labels(endpoint, model).set(1 if up else 0)


def serve_metrics(listen: str, registry: CollectorRegistry):
    """Serve ``registry`` as Prometheus ``/metrics`` on ``listen`` (host:port; an empty host is every interface) from a
    thread of its own; returns the HTTP server (``shutdown()`` stops it)."""
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
    except OSError as exc:
        raise StartupError(f"cannot listen on {listen} (metrics_listen): {exc}") from None
    return server
