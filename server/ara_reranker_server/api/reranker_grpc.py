"""reranker.v1 over gRPC (this service's own API): converts messages; ``Calls`` does the rest."""

from __future__ import annotations

from typing import Sequence

import grpc

from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc
from ara_reranker_server.api.calls import Calls, Served, new_request_id
from ara_reranker_server.api.large_messages import add_handlers, is_large, parse_proto, serialize_proto, strings
from ara_reranker_server.core_types import RerankJob
from ara_reranker_server.errors import InvalidRequest, RerankerError, status_of
from ara_reranker_server.service_info import ServiceInfo
from ara_reranker_server.windows import Split

__all__ = ["RerankerService", "API", "SERVICE_NAME", "add_to_server", "info_response"]

API = "reranker.v1"
SERVICE_NAME = reranker_pb2.DESCRIPTOR.services_by_name["Reranker"].full_name
_WINDOW_FIELDS = ("window_tokens", "window_overlap_tokens", "max_windows")


class RerankerService(reranker_pb2_grpc.RerankerServicer):
    """reranker.v1.Reranker over the served models."""

    def __init__(self, calls: Calls, info: ServiceInfo) -> None:
        self.calls = calls
        self.info = info

    async def Rerank(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """A serialized RerankRequest in, a serialized RerankResponse out (``add_to_server``): a large message is
        read and written a slice at a time (large_messages.py)."""
        request_id = request_id_of(context)
        read = []

        async def build() -> tuple[str, RerankJob]:
            request = await parse_proto(reranker_pb2.RerankRequest, raw)
            documents = await strings(request.documents, len(raw))
            read.extend((request, documents))
            return request.model, job_of(request, documents)

        try:
            with self.calls.tracing.continued(context.invocation_metadata()):
                served = await self.calls.rerank(API, request_id, build, timeout_s=context.time_remaining(),
                                                 time_remaining=context.time_remaining)
        except RerankerError as exc:
            await context.abort(grpc.StatusCode[status_of(exc)], str(exc))
        request, documents = read
        head, results = _response(request, documents, served)
        return await serialize_proto(head, "results", results, is_large(len(raw)) and request.return_documents)

    async def Info(self, request: reranker_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> reranker_pb2.InfoResponse:
        self.calls.info(API)
        return info_response(self.info)


def add_to_server(service: RerankerService, server: grpc.aio.Server) -> None:
    """reranker.v1.Reranker on ``server``; Rerank takes and answers bytes."""
    add_handlers(server, SERVICE_NAME, {
        "Rerank": grpc.unary_unary_rpc_method_handler(service.Rerank),
        "Info": grpc.unary_unary_rpc_method_handler(
            service.Info, request_deserializer=reranker_pb2.InfoRequest.FromString,
            response_serializer=reranker_pb2.InfoResponse.SerializeToString),
    })


def info_response(info: ServiceInfo) -> reranker_pb2.InfoResponse:
    """reranker.v1's Info: the service, its default model's figures at the top level, every model."""
    default = info.default
    return reranker_pb2.InfoResponse(
        model_id=default.model_id, triton_model=default.triton_model, triton_endpoints=list(info.triton_endpoints),
        dtype=default.dtype, engine=default.engine, max_input_length=default.max_input_length,
        limits=reranker_pb2.Limits(**vars(info.limits)), version=info.version, auth_required=info.auth_required,
        models=[reranker_pb2.ServedModel(**vars(model)) for model in info.models],
    )


def job_of(request: reranker_pb2.RerankRequest, documents: Sequence[str] | None = None) -> RerankJob:
    """The core's job for a RerankRequest (InvalidRequest for fields that do not go together); ``documents``:
    its documents already read (large_messages.strings)."""
    return RerankJob(
        query=request.query,
        documents=request.documents if documents is None else documents,
        top_k=request.top_k if request.HasField("top_k") else None,
        raw_scores=request.raw_scores,
        truncate=request.truncation != reranker_pb2.TRUNCATION_NONE,
        split=_split(request),
        from_start=request.truncation == reranker_pb2.TRUNCATION_START,
        max_document_tokens=request.max_document_tokens if request.HasField("max_document_tokens") else None,
        priority=_priority(request.priority),
        instruction=request.instruction or None,
    )


def _priority(value: int) -> str:
    if value in (reranker_pb2.PRIORITY_UNSPECIFIED, reranker_pb2.PRIORITY_INTERACTIVE):
        return "interactive"
    if value == reranker_pb2.PRIORITY_BATCH:
        return "batch"
    raise InvalidRequest(f"priority must be PRIORITY_INTERACTIVE or PRIORITY_BATCH; got {value}")


def _response(request: reranker_pb2.RerankRequest, documents: Sequence[str],
              served: Served) -> tuple[reranker_pb2.RerankResponse, list[reranker_pb2.RankedDocument]]:
    """The response without its results, and its results."""
    outcome = served.outcome
    results = []
    for r in outcome.results:
        result = reranker_pb2.RankedDocument(index=r.index, score=r.score, logit=r.logit)
        if request.return_documents:
            result.document = documents[r.index]
        if r.window is not None:
            result.best_window.CopyFrom(reranker_pb2.Window(index=r.window.index, start_char=r.window.start_char,
                                                            end_char=r.window.end_char))
        results.append(result)
    return reranker_pb2.RerankResponse(
        usage=reranker_pb2.Usage(documents=outcome.documents, input_tokens=outcome.input_tokens,
                                 truncated_documents=outcome.truncated, windows=outcome.windows,
                                 cached_documents=outcome.cached),
        timings=reranker_pb2.Timings(
            tokenization_ns=int(outcome.tokenization_s * 1e9), inference_ns=int(outcome.inference_s * 1e9),
            total_ns=int(served.duration_s * 1e9),
        ),
        model_id=served.model.model_id,
    ), results


def _split(request: reranker_pb2.RerankRequest) -> Split | None:
    """The request's TRUNCATION_SPLIT parameters (None with the other truncations, which refuse them)."""
    given = {name: getattr(request, name) for name in _WINDOW_FIELDS if request.HasField(name)}
    if request.truncation != reranker_pb2.TRUNCATION_SPLIT:
        if given:
            raise InvalidRequest(f"{', '.join(given)} apply only with TRUNCATION_SPLIT")
        return None
    return Split(given.get("window_tokens"), given.get("window_overlap_tokens"), given.get("max_windows"))


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    """The value of the call's first metadata entry ``key`` (lower case), or None."""
    return next((value for k, value in context.invocation_metadata() or () if k == key), None)


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id, else a new one (echoed in the trailing metadata)."""
    request_id = new_request_id(metadata_value(context, "x-request-id"))
    context.set_trailing_metadata((("x-request-id", request_id),))
    return request_id
