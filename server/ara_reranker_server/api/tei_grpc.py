"""tei.v1 over gRPC: text-embeddings-inference's Rerank and Info services (proto/tei/v1/tei.proto), so
TEI's gRPC clients (Haystack's HuggingFaceTEIRanker with use_grpc) call this gateway unchanged.

TEI semantics kept: ``truncate`` is a plain bool (false: a pair over the max input length is refused),
``truncation_direction`` LEFT cuts a document's start, every text is ranked best first (no top-n),
errors carry TEI's gRPC codes (server/ara_reranker_server/errors.py ANSWERS ``tei_grpc``). The default model answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import grpc
import numpy as np

from ara_reranker_server.api.calls import PRIORITY, PRIORITY_HEADER, Calls, Served, requested_priority
from ara_reranker_server.api.large_messages import add_handlers, is_large, parse_proto, serialize_proto, strings
from ara_reranker_server.api.reranker_grpc import metadata_value, request_id_of
from ara_reranker_server.core_types import RerankJob
from ara_reranker_server.errors import EmptyRequest, InvalidRequest, RerankerError, answer_of
from ara_reranker_server.ranking import rank_by_logits
from ara_reranker_server.service_info import ServiceInfo
from ara_reranker_server.tei.v1 import tei_pb2, tei_pb2_grpc

__all__ = ["TeiRerankService", "TeiInfoService", "API", "SERVICE_NAMES", "add_to_server"]

API = "tei.v1"
SERVICE_NAMES = tuple(tei_pb2.DESCRIPTOR.services_by_name[name].full_name for name in ("Rerank", "Info"))
_LEFT = tei_pb2.TRUNCATION_DIRECTION_LEFT


class TeiRerankService(tei_pb2_grpc.RerankServicer):
    def __init__(self, calls: Calls, max_documents: int) -> None:
        self.calls = calls
        self.max_documents = max_documents

    async def Rerank(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """A serialized RerankRequest in, a serialized RerankResponse out (``add_to_server``): a large message is
        read and written a slice at a time (large_messages.py)."""
        started = time.perf_counter()
        request_id = request_id_of(context)
        read = []

        async def build() -> tuple[str, RerankJob]:
            request = await parse_proto(tei_pb2.RerankRequest, raw)
            texts = await strings(request.texts, len(raw))
            read.extend((request, texts))
            return "", _job(request.query, texts, request.truncate, request.truncation_direction, request.raw_scores)

        try:
            PRIORITY.set(requested_priority(metadata_value(context, PRIORITY_HEADER)))
        except RerankerError as exc:
            self.calls.refused(API, request_id, exc, started)
            await context.abort(grpc.StatusCode[answer_of(exc).tei_grpc], str(exc))
        try:
            with self.calls.tracing.continued(context.invocation_metadata()):
                served = await self.calls.rerank(API, request_id, build, timeout_s=context.time_remaining(),
                                                 time_remaining=context.time_remaining)
        except RerankerError as exc:
            await context.abort(grpc.StatusCode[answer_of(exc).tei_grpc], str(exc))
        request, texts = read
        ranks = [tei_pb2.Rank(index=r.index, score=r.score, text=texts[r.index] if request.return_text else None)
                 for r in served.outcome.results]
        head = tei_pb2.RerankResponse(metadata=_metadata([served], texts, started))
        return await serialize_proto(head, "ranks", ranks, is_large(len(raw)) and request.return_text)

    async def RerankStream(self, request_iterator: AsyncIterator[tei_pb2.RerankStreamRequest],
                           context: grpc.aio.ServicerContext) -> tei_pb2.RerankResponse:
        """Each message is one (query, text) pair, its index its position in the stream; raw_scores and
        return_text are the first message's (as TEI). Pairs that share a query (and truncation) are
        ranked as one request; all are then ordered together by their logits."""
        started = time.perf_counter()
        request_id = request_id_of(context)
        messages: list[tei_pb2.RerankStreamRequest] = []
        try:
            PRIORITY.set(requested_priority(metadata_value(context, PRIORITY_HEADER)))
            async for message in request_iterator:
                messages.append(message)
                if len(messages) > self.max_documents:
                    raise InvalidRequest(f"more than max_documents={self.max_documents} texts in the stream; split it")
            if not messages:
                raise EmptyRequest("the stream sent no text")
        except RerankerError as exc:
            with self.calls.tracing.continued(context.invocation_metadata()):
                self.calls.refused(API, request_id, exc, started)
            await context.abort(grpc.StatusCode[answer_of(exc).tei_grpc], str(exc))
        first = messages[0]
        groups: dict[tuple, list[int]] = {}
        for i, m in enumerate(messages):
            groups.setdefault((m.query, m.truncate, m.truncation_direction), []).append(i)
        members = list(groups.values())
        builds = [lambda key=key, group=group: ("", _job(key[0], [messages[i].text for i in group], key[1], key[2], first.raw_scores))
                  for key, group in groups.items()]
        try:
            with self.calls.tracing.continued(context.invocation_metadata()):  # each group's task copies the context
                served = await asyncio.gather(*(self.calls.rerank(API, request_id, build, timeout_s=context.time_remaining(),
                                                                  time_remaining=context.time_remaining) for build in builds))
        except RerankerError as exc:
            await context.abort(grpc.StatusCode[answer_of(exc).tei_grpc], str(exc))
        # Each group's results are in its own indices: back to stream positions, then one order by logit.
        results = [(group[r.index], r) for group, s in zip(members, served) for r in s.outcome.results]
        order = rank_by_logits(np.array([r.logit for _, r in results], dtype=np.float32))
        ranks = [tei_pb2.Rank(index=results[j][0], score=results[j][1].score,
                              text=messages[results[j][0]].text if first.return_text else None) for j in order]
        return tei_pb2.RerankResponse(ranks=ranks, metadata=_metadata(served, [m.text for m in messages], started))


class TeiInfoService(tei_pb2_grpc.InfoServicer):
    def __init__(self, calls: Calls, info: ServiceInfo, tokenization_workers: int) -> None:
        self.calls = calls
        self.info = info  # the default model's dtype is filled in once Triton answers
        self.tokenization_workers = tokenization_workers

    async def Info(self, request: tei_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> tei_pb2.InfoResponse:
        self.calls.info(API)
        info, model, limits = self.info, self.info.default, self.info.limits
        return tei_pb2.InfoResponse(
            version=info.version, model_id=model.model_id, model_dtype=model.dtype.lower(),
            model_type=tei_pb2.MODEL_TYPE_RERANKER, max_concurrent_requests=limits.max_concurrent_rpcs,
            max_input_length=model.max_input_length, max_batch_tokens=limits.max_inflight_tokens,
            max_batch_requests=limits.chunk_size, max_client_batch_size=limits.max_documents_per_request,
            tokenization_workers=self.tokenization_workers,
        )


def add_to_server(service: TeiRerankService, server: grpc.aio.Server) -> None:
    """tei.v1.Rerank on ``server``; Rerank takes and answers bytes, RerankStream messages."""
    add_handlers(server, SERVICE_NAMES[0], {
        "Rerank": grpc.unary_unary_rpc_method_handler(service.Rerank),
        "RerankStream": grpc.stream_unary_rpc_method_handler(
            service.RerankStream, request_deserializer=tei_pb2.RerankStreamRequest.FromString,
            response_serializer=tei_pb2.RerankResponse.SerializeToString),
    })


def _job(query: str, texts, truncate: bool, direction: int, raw_scores: bool) -> RerankJob:
    if not texts:
        raise EmptyRequest("`texts` cannot be empty")
    return RerankJob(query=query, documents=texts if isinstance(texts, list) else list(texts), raw_scores=raw_scores, truncate=truncate, from_start=direction == _LEFT)


def _metadata(served: list[Served], texts, started: float) -> tei_pb2.Metadata:
    outcomes = [s.outcome for s in served]
    return tei_pb2.Metadata(
        compute_chars=sum(len(t) for t in texts), compute_tokens=sum(o.input_tokens for o in outcomes),
        total_time_ns=int((time.perf_counter() - started) * 1e9),
        tokenization_time_ns=int(sum(o.tokenization_s for o in outcomes) * 1e9),
        inference_time_ns=int(sum(o.inference_s for o in outcomes) * 1e9),
    )
