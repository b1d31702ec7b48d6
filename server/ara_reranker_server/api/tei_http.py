"""text-embeddings-inference's HTTP API: ``POST /rerank`` and ``GET /info``.

TEI semantics kept: ``texts`` must not be empty (400 ``Empty``); ``truncate`` null means the server's
default (truncate: TEI's ``auto_truncate``), false refuses a pair over the max input length (422
``Validation``); ``truncation_direction`` ``left`` cuts a document's start; the answer is a bare array
of every text, best first; errors are ``{"error", "error_type"}`` with TEI's status codes. An optional
``model`` field picks a served model (TEI itself serves one).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ara_reranker_server.api.calls import Calls
from ara_reranker_server.api.http import Dialect, Instructed, Route
from ara_reranker_server.core_types import RerankJob
from ara_reranker_server.errors import EmptyRequest
from ara_reranker_server.service_info import ServiceInfo

__all__ = ["routes", "API"]

API = "tei"


class TeiRerankRequest(Instructed):
    """TEI rerank request."""

    query: str
    texts: list[str]
    truncate: bool | None = Field(None, description="Cut pairs over the max input length (null: the server's default, true)")
    truncation_direction: Literal["right", "left", "Right", "Left"] = Field("right", description="Which end of a document is cut")
    raw_scores: bool = Field(False, description="The model's logit instead of sigmoid(logit)")
    return_text: bool = False
    model: str | None = Field(None, description="A served model's name or hub id (default: the default model)")


class Rank(BaseModel):
    index: int
    score: float
    text: str | None = None


class ModelType(BaseModel):
    reranker: dict


class TeiInfo(BaseModel):
    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: ModelType
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None
    docker_label: str | None


def routes(calls: Calls, info: ServiceInfo, tokenization_workers: int) -> list[Route]:
    """``info``: the service's Info (the default model's dtype is filled in once Triton answers)."""

    async def rerank(body: TeiRerankRequest, request_id: str):
        def build() -> tuple[str, RerankJob]:
            if not body.texts:
                raise EmptyRequest("`texts` cannot be empty")
            return body.model or "", RerankJob(query=body.query, documents=body.texts, raw_scores=body.raw_scores,
                                               truncate=body.truncate is not False,
                                               from_start=body.truncation_direction.lower() == "left",
                                               instruction=body.instruction)

        served = await calls.rerank(API, request_id, build)
        outcome = served.outcome
        ranks = [{"index": r.index, "score": r.score, **({"text": body.texts[r.index]} if body.return_text else {})}
                 for r in outcome.results]
        headers = {
            "x-compute-characters": str(sum(map(len, body.texts))),
            "x-compute-tokens": str(outcome.input_tokens),
            "x-total-time": str(round(served.duration_s * 1000)),
            "x-tokenization-time": str(round(outcome.tokenization_s * 1000)),
            "x-inference-time": str(round(outcome.inference_s * 1000)),
        }
        return ranks, headers

    async def describe(body: None, request_id: str):
        calls.info(API)
        limits, model = info.limits, info.default
        return {
            "model_id": model.model_id, "model_sha": None, "model_dtype": model.dtype.lower() or "unknown",
            "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
            "max_concurrent_requests": limits.max_concurrent_rpcs, "max_input_length": model.max_input_length,
            "max_batch_tokens": limits.max_inflight_tokens, "max_batch_requests": limits.chunk_size,
            "max_client_batch_size": limits.max_documents_per_request, "auto_truncate": True,
            "tokenization_workers": tokenization_workers, "version": info.version, "sha": None, "docker_label": None,
        }, {}

    return [
        Route("POST", "/rerank", API, Dialect.TEI, rerank, "TEI rerank (a body with texts)", TeiRerankRequest, list[Rank],
              when="texts"),
        Route("GET", "/info", API, Dialect.TEI, describe, "TEI info (the default model)", None, TeiInfo, counted="Info"),
    ]
