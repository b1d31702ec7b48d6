"""The gRPC service: converts messages, maps errors to status codes, records metrics and request logs.

It holds no reranking logic: ``server.reranking.Reranker`` does the work.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace

import grpc

from reranker.v1 import reranker_pb2, reranker_pb2_grpc
from server.errors import InvalidRequest, RerankerError, status_of
from server.metrics import NO_MODEL, GatewayMetrics
from server.models import ModelRegistry, ServedModel
from server.reranking import RerankJob, RerankOutcome
from server.windows import Split

__all__ = ["RerankerService"]

log = logging.getLogger("server.requests")
# How close to its deadline a cancelled call counts as one whose deadline passed (seconds).
DEADLINE_SKEW_S = 1.0


class RerankerService(reranker_pb2_grpc.RerankerServicer):
    """reranker.v1.Reranker over the served models' ``Reranker`` cores."""

    def __init__(self, models: ModelRegistry, metrics: GatewayMetrics, info: reranker_pb2.InfoResponse,
                 log_documents: bool = False) -> None:
        self.models = models
        self.metrics = metrics
        self.info = info
        self.log_documents = log_documents

    async def Rerank(self, request: reranker_pb2.RerankRequest, context: grpc.aio.ServicerContext) -> reranker_pb2.RerankResponse:
        started = time.perf_counter()
        request_id = _request_id(context)
        job = RerankJob(
            query=request.query,
            documents=request.documents,
            top_k=request.top_k if request.HasField("top_k") else None,
            raw_scores=request.raw_scores,
            truncate=request.truncation != reranker_pb2.TRUNCATION_NONE,
        )
        self.metrics.in_flight.inc()
        code, outcome, error, model = grpc.StatusCode.OK, None, "", None
        try:
            job = replace(job, split=_split(request))
            model = self.models.get(request.model)
            outcome = await model.reranker.rerank(job, timeout_s=context.time_remaining())
        except RerankerError as exc:
            code, error = status_of(exc), str(exc)
        except asyncio.CancelledError:
            # gRPC cancels the handler both when the caller cancels and when the caller's deadline passes.
            # The caller's clock runs ahead of ours by the time its call took to reach us (and a loaded
            # machine adds to that), so a cancel that close to the deadline is the deadline.
            remaining = context.time_remaining()
            if remaining is not None and remaining <= DEADLINE_SKEW_S:
                code, error = grpc.StatusCode.DEADLINE_EXCEEDED, "the caller's deadline passed"
            else:
                code, error = grpc.StatusCode.CANCELLED, "cancelled by the client"
            raise
        except Exception as exc:  # a bug: answer INTERNAL, keep the cause in the log
            code, error = grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the gateway log, request id {request_id}"
            log.exception("request %s failed", request_id)
        finally:
            self.metrics.in_flight.dec()
            self._record("Rerank", code, started, request_id, job, model, outcome, error)
        if code != grpc.StatusCode.OK:
            await context.abort(code, error)
        return self._response(request, model, outcome, time.perf_counter() - started)

    async def Info(self, request: reranker_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> reranker_pb2.InfoResponse:
        self.metrics.requests.labels("Info", grpc.StatusCode.OK.name, NO_MODEL).inc()
        return self.info

    def _response(self, request: reranker_pb2.RerankRequest, model: ServedModel, outcome: RerankOutcome,
                  total_s: float) -> reranker_pb2.RerankResponse:
        results = []
        for r in outcome.results:
            result = reranker_pb2.RankedDocument(index=r.index, score=r.score, logit=r.logit)
            if request.return_documents:
                result.document = request.documents[r.index]
            if r.window is not None:
                result.best_window.CopyFrom(reranker_pb2.Window(index=r.window.index, start_char=r.window.start_char,
                                                                end_char=r.window.end_char))
            results.append(result)
        return reranker_pb2.RerankResponse(
            results=results,
            usage=reranker_pb2.Usage(documents=outcome.documents, input_tokens=outcome.input_tokens,
                                     truncated_documents=outcome.truncated, windows=outcome.windows),
            timings=reranker_pb2.Timings(
                tokenization_ns=int(outcome.tokenization_s * 1e9), inference_ns=int(outcome.inference_s * 1e9), total_ns=int(total_s * 1e9)
            ),
            model_id=model.model_id,
        )

    def _record(self, method: str, code: grpc.StatusCode, started: float, request_id: str, job: RerankJob,
                model: ServedModel | None, outcome: RerankOutcome | None, error: str) -> None:
        duration = time.perf_counter() - started
        m = self.metrics
        name = model.name if model is not None else NO_MODEL
        m.requests.labels(method, code.name, name).inc()
        m.request_duration.labels(method, name).observe(duration)
        if outcome is not None:
            m.stage_duration.labels("tokenization", name).observe(outcome.tokenization_s)
            m.stage_duration.labels("inference", name).observe(outcome.inference_s)
            m.stage_duration.labels("total", name).observe(duration)
            m.documents.labels(name).observe(outcome.documents)
            m.documents_total.labels(name).inc(outcome.documents)
            m.input_tokens.labels(name).observe(outcome.input_tokens)
            m.input_tokens_total.labels(name).inc(outcome.input_tokens)
            m.truncated.labels(name).inc(outcome.truncated)
        entry = {
            "request_id": request_id,
            "method": method,
            "model": name or None,
            "status": code.name,
            "documents": len(job.documents),
            "tokens": outcome.input_tokens if outcome else None,
            "truncated": outcome.truncated if outcome else None,
            "windows": outcome.windows if outcome and job.split else None,
            "duration_ms": round(duration * 1000, 3),
        }
        if error:
            entry["error"] = error
        if self.log_documents:
            entry["query"], entry["document_texts"] = job.query, list(job.documents)
        level = logging.INFO if code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                         grpc.StatusCode.CANCELLED) else logging.WARNING
        # The handler's formatter (gateway.configure_logging) writes the fields as JSON, or this text.
        log.log(level, " ".join(f"{k}={v}" for k, v in entry.items() if v is not None), extra={"fields": entry})


_WINDOW_FIELDS = ("window_tokens", "window_overlap_tokens", "max_windows")


def _split(request: reranker_pb2.RerankRequest) -> Split | None:
    """The request's TRUNCATION_SPLIT parameters (None with the other truncations, which refuse them)."""
    given = {name: getattr(request, name) for name in _WINDOW_FIELDS if request.HasField(name)}
    if request.truncation != reranker_pb2.TRUNCATION_SPLIT:
        if given:
            raise InvalidRequest(f"{', '.join(given)} apply only with TRUNCATION_SPLIT")
        return None
    return Split(given.get("window_tokens"), given.get("window_overlap_tokens"), given.get("max_windows"))


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id, else a new one (echoed in the trailing metadata)."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and value:
            request_id = value[:128]
            break
    else:
        request_id = uuid.uuid4().hex
    context.set_trailing_metadata((("x-request-id", request_id),))
    return request_id
