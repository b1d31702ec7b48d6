"""What every API does around the core for one call: find the model, run the job, then count it in the
metrics, write the request log and end its trace span, whatever the outcome. The API modules only convert
(and make the caller's trace context current: ``Tracing.continued``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Awaitable, Callable

from ara_reranker_server.core_types import RerankJob, RerankOutcome
from ara_reranker_server.dispatch import PRIORITIES
from ara_reranker_server.errors import Internal, InvalidRequest, RerankerError, answer_of
from ara_reranker_server.metrics import ANSWERED_CODES, NO_MODEL, GatewayMetrics
from ara_reranker_server.models import ModelRegistry, ServedModel
from ara_reranker_server.tracing import NO_TRACING, Tracing, start_ns_of

__all__ = ["Calls", "Served", "DEADLINE_SKEW_S", "PRIORITY", "PRIORITY_HEADER", "new_request_id", "requested_priority"]

# The call's priority when its transport carries it beside the body (the APIs whose bodies their owners fix):
# the x-reranker-priority HTTP header or gRPC metadata, set by the transport for the call's task.
PRIORITY_HEADER = "x-reranker-priority"
PRIORITY: ContextVar[str | None] = ContextVar("priority", default=None)

log = logging.getLogger("ara_reranker_server.requests")
# How close to its deadline a cancelled call counts as one whose deadline passed (seconds): the caller's
# clock runs ahead of ours by the time its call took to reach us, and a loaded machine adds to that.
DEADLINE_SKEW_S = 1.0
_OK = "OK"
_COUNTED = frozenset(ANSWERED_CODES["Rerank"])
# Codes logged at INFO: the caller's doing (or nothing wrong); the rest at WARNING.
_CALLERS_CODES = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED", "UNAUTHENTICATED"}


def requested_priority(value: str | None) -> str | None:
    """The priority an x-reranker-priority header or metadata value asks for (interactive or batch, any case; None
    when absent); InvalidRequest naming the header otherwise."""
    if value is None:
        return None
    if value.strip().lower() not in PRIORITIES:
        raise InvalidRequest(f"header {PRIORITY_HEADER} must be one of {', '.join(PRIORITIES)}; got {value[:50]!r}")
    return value.strip().lower()


@dataclass(frozen=True)
class Served:
    """A call's result: the model that served it, the core's outcome, the whole call's duration."""

    model: ServedModel
    outcome: RerankOutcome
    duration_s: float


def new_request_id(given: str | None) -> str:
    """The caller's request id (cut to 128 characters), else a new one."""
    return given[:128] if given else uuid.uuid4().hex


class Calls:
    """The served models, behind the bookkeeping every API shares."""

    def __init__(self, models: ModelRegistry, metrics: GatewayMetrics, log_documents: bool = False,
                 tracing: Tracing = NO_TRACING) -> None:
        self.models = models
        self.metrics = metrics
        self.log_documents = log_documents
        self.tracing = tracing

    async def rerank(self, api: str, request_id: str,
                     build: Callable[[], tuple[str, RerankJob] | Awaitable[tuple[str, RerankJob]]],
                     timeout_s: float | None = None, time_remaining: Callable[[], float | None] | None = None) -> Served:
        """Rank what ``build()`` (the API's conversion: the model name and the job; or a coroutine of them) asks for.

        Raises a ``RerankerError`` (a conversion's, the core's, or ``Internal`` for a bug, logged);
        ``asyncio.CancelledError`` when the caller went away (counted DEADLINE_EXCEEDED when its deadline,
        ``time_remaining()``, was about to pass)."""
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        code, job, model, outcome, error = _OK, None, None, None, ""
        with self.tracing.call(api) as span:
            try:
                built = build()
                name, job = await built if inspect.isawaitable(built) else built
                asked = PRIORITY.get()
                if asked is not None:  # the transport's header or metadata: the APIs' bodies have no such field
                    job = replace(job, priority=asked)
                model = self.models.get(name)
                outcome = await model.reranker.rerank(job, timeout_s=timeout_s)
                return Served(model, outcome, time.perf_counter() - started)
            except RerankerError as exc:
                code, error = answer_of(exc).grpc, str(exc)
                raise
            except asyncio.CancelledError:
                remaining = time_remaining() if time_remaining is not None else None
                if remaining is not None and remaining <= DEADLINE_SKEW_S:
                    code, error = "DEADLINE_EXCEEDED", "the caller's deadline passed"
                else:
                    code, error = "CANCELLED", "cancelled by the client"
                raise
            except Exception as exc:  # a bug: answer INTERNAL, keep the cause in the log
                code, error = "INTERNAL", f"internal error ({type(exc).__name__}); see the gateway log, request id {request_id}"
                log.exception("request %s failed", request_id)
                raise Internal(error) from exc
            finally:
                self.metrics.in_flight.dec()
                self._record(api, "Rerank", code, started, request_id, job, model, outcome, error, span)

    def info(self, api: str) -> None:
        """Count an Info call."""
        self.metrics.requests.labels("Info", _OK, NO_MODEL, api).inc()

    def denied(self, api: str, method: str) -> None:
        """Count a call refused for its API key (never logged with the key)."""
        self.metrics.requests.labels(method, "UNAUTHENTICATED", NO_MODEL, api).inc()

    def refused(self, api: str, request_id: str, exc: RerankerError, started: float) -> None:
        """Count, log and trace a call refused before it became a job (e.g. an HTTP body that is not JSON)."""
        with self.tracing.call(api, start_ns_of(started) if self.tracing.enabled else None) as span:
            self._record(api, "Rerank", answer_of(exc).grpc, started, request_id, None, None, None, str(exc), span)

    def _record(self, api: str, method: str, code: str, started: float, request_id: str, job: RerankJob | None,
                model: ServedModel | None, outcome: RerankOutcome | None, error: str, span) -> None:
        duration = time.perf_counter() - started
        name = model.name if model is not None else NO_MODEL
        if method == "Rerank" and code in _COUNTED:
            series = self.metrics.call_series(name, api)
            series.codes[code].inc()
            series.duration.observe(duration)
            if outcome is not None and series.outcome is not None:
                o = series.outcome
                o.tokenization.observe(outcome.tokenization_s)
                o.inference.observe(outcome.inference_s)
                o.total.observe(duration)
                o.documents.observe(outcome.documents)
                o.documents_total.inc(outcome.documents)
                o.input_tokens.observe(outcome.input_tokens)
                o.input_tokens_total.inc(outcome.input_tokens)
                o.truncated.inc(outcome.truncated)
                o.cache_hits.inc(outcome.cached)
                o.cache_misses.inc(outcome.documents - outcome.cached)
        else:
            self.metrics.requests.labels(method, code, name, api).inc()
            self.metrics.request_duration.labels(method, name, api).observe(duration)
        entry = {
            "request_id": request_id,
            "api": api,
            "method": method,
            "model": name or None,
            "status": code,
            "documents": len(job.documents) if job is not None else None,
            "tokens": outcome.input_tokens if outcome else None,
            "truncated": outcome.truncated if outcome else None,
            "cached": outcome.cached if outcome else None,
            "windows": outcome.windows if outcome and job is not None and job.split else None,
            "duration_ms": round(duration * 1000, 3),
        }
        if span.recording:
            span.finish(code, error, {"reranker.api": api, "reranker.request_id": request_id, "reranker.model": entry["model"],
                                      "reranker.documents": entry["documents"], "reranker.tokens": entry["tokens"],
                                      "reranker.truncated": entry["truncated"], "reranker.cached": entry["cached"],
                                      "reranker.windows": entry["windows"]})
        entry.update(span.ids())  # the request's trace, when tracing is on
        if error:
            entry["error"] = error
        if self.log_documents and job is not None:
            entry["query"], entry["document_texts"] = job.query, list(job.documents)
        level = logging.INFO if code in _CALLERS_CODES else logging.WARNING
        # The handler's formatter (gateway.configure_logging) writes the fields as JSON, or this text.
        log.log(level, " ".join(f"{k}={v}" for k, v in entry.items() if v is not None), extra={"fields": entry})
