"""Cohere's rerank APIs over HTTP, and Jina's (which shares Cohere v1's path and most of its fields):

- ``POST /v1/rerank``: Cohere v1 and Jina. Documents are strings or objects (``rank_fields`` picks the
  keys to rank on, default ``text``; the object is echoed back). A long document is split into windows
  and ranked by its best one, as Cohere does (``max_chunks_per_doc``, default 10: reranker.v1's
  TRUNCATION_SPLIT). The answer is the union of both vendors' shapes (``id``, ``results``, ``meta``,
  ``model``, ``usage``); documents are returned unless ``return_documents`` is false (Jina's default,
  and harmless to Cohere clients, which ignore them).
- ``POST /v2/rerank``: Cohere v2. ``model`` is required; ``max_tokens_per_doc`` (default 4096) cuts
  each document; older SDKs' ``return_documents``, ``rank_fields`` and ``max_chunks_per_doc`` work too.

vLLM serves its rerank API on both paths too, with these bodies: both answers also carry vLLM's ``id``,
``model`` and ``usage`` (``prompt_tokens``, ``total_tokens``), so vLLM's clients read them as well.

``relevance_score`` is reranker.v1's score: sigmoid of the model's logit, ranked by the logit.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, Field

from ara_reranker_server.api.calls import Calls
from ara_reranker_server.api.http import Dialect, Instructed, Route
from ara_reranker_server.core_types import RerankJob
from ara_reranker_server.errors import InvalidRequest
from ara_reranker_server.windows import Split

__all__ = ["routes", "DEFAULT_MAX_TOKENS_PER_DOC"]

# Cohere v2's default for max_tokens_per_doc.
DEFAULT_MAX_TOKENS_PER_DOC = 4096
# Cohere bills one search unit per query with up to 100 documents (each chunk of a long one counts).
DOCUMENTS_PER_SEARCH_UNIT = 100

Document = str | dict[str, Any]


class CohereV1Request(Instructed):
    """Cohere v1 / Jina rerank request."""

    model: str | None = Field(None, description="A served model's name or hub id (default: the default model)")
    query: str
    documents: list[Document] = Field(description="Strings, or objects whose rank_fields (default text) are ranked")
    top_n: int | None = Field(None, description="Return only the best top_n (default: all)")
    return_documents: bool | None = Field(None, description="Echo each document (default: true)")
    rank_fields: list[str] | None = Field(None, description="Keys of object documents to rank on (default [\"text\"])")
    max_chunks_per_doc: int | None = Field(None, description="Windows scored per long document (default 10)")


class CohereV2Request(Instructed):
    """Cohere v2 rerank request (older SDKs' fields accepted too)."""

    model: str = Field(description="A served model's name or hub id")
    query: str
    documents: list[Document]
    top_n: int | None = None
    max_tokens_per_doc: int | None = Field(None, description=f"Tokens of each document kept (default {DEFAULT_MAX_TOKENS_PER_DOC})")
    return_documents: bool | None = Field(None, description="Echo each document (default: false)")
    rank_fields: list[str] | None = None
    max_chunks_per_doc: int | None = Field(None, description="Split long documents into up to this many windows")
    priority: int | None = Field(None, description="Accepted and ignored")


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class Result(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = Field(None, description="{\"text\": ...}, or the object sent")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CohereV1Response(BaseModel):
    id: str
    results: list[Result]
    meta: Meta
    model: str
    usage: Usage


class CohereV2Response(BaseModel):
    id: str
    results: list[Result]
    meta: Meta
    model: str
    usage: Usage


def texts_of(documents: list[Document], rank_fields: list[str] | None) -> list[str]:
    """The text ranked for each document: a string itself; an object's ``rank_fields`` (default
    ``text``): the one field's value, or ``field: value`` lines for several."""
    fields = rank_fields or ["text"]
    if not fields or any(not isinstance(f, str) or not f for f in fields):
        raise InvalidRequest(f"rank_fields must be non-empty field names; got {rank_fields!r}")
    texts = []
    for i, document in enumerate(documents):
        if isinstance(document, str):
            texts.append(document)
            continue
        missing = [f for f in fields if f not in document]
        if missing:
            raise InvalidRequest(f"documents.{i} has no field {missing[0]!r} (rank_fields {fields}); "
                                 f"its fields: {', '.join(list(document)[:10]) or 'none'}")
        values = [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in (document[f] for f in fields)]
        texts.append(values[0] if len(fields) == 1 else "\n".join(f"{f}: {v}" for f, v in zip(fields, values)))
    return texts


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise InvalidRequest(f"{name} must be at least 1; got {value}")
    return value


def routes(calls: Calls) -> list[Route]:
    async def v1(body: CohereV1Request, request_id: str):
        def build() -> tuple[str, RerankJob]:
            chunks = _positive("max_chunks_per_doc", body.max_chunks_per_doc)
            return body.model or "", RerankJob(query=body.query, documents=texts_of(body.documents, body.rank_fields),
                                               top_k=_positive("top_n", body.top_n), split=Split(max_windows=chunks),
                                               instruction=body.instruction)

        served = await calls.rerank("v1/rerank", request_id, build)
        outcome = served.outcome
        return {
            "id": request_id,
            "results": _results(body.documents, outcome.results, body.return_documents is not False),
            "meta": _meta("1", outcome.windows),
            "model": served.model.name,
            "usage": _usage(outcome.input_tokens),
        }, {}

    async def v2(body: CohereV2Request, request_id: str):
        def build() -> tuple[str, RerankJob]:
            tokens = _positive("max_tokens_per_doc", body.max_tokens_per_doc) or DEFAULT_MAX_TOKENS_PER_DOC
            chunks = _positive("max_chunks_per_doc", body.max_chunks_per_doc)
            return body.model, RerankJob(query=body.query, documents=texts_of(body.documents, body.rank_fields),
                                         top_k=_positive("top_n", body.top_n), max_document_tokens=tokens,
                                         split=Split(max_windows=chunks) if chunks is not None else None,
                                         instruction=body.instruction)

        served = await calls.rerank("v2/rerank", request_id, build)
        outcome = served.outcome
        return {
            "id": request_id,
            "results": _results(body.documents, outcome.results, bool(body.return_documents)),
            "meta": _meta("2", outcome.windows),
            "model": served.model.name,
            "usage": _usage(outcome.input_tokens),
        }, {}

    return [
        Route("POST", "/v1/rerank", "v1/rerank", Dialect.COHERE, v1, "Cohere v1 and Jina rerank",
              CohereV1Request, CohereV1Response),
        Route("POST", "/v2/rerank", "v2/rerank", Dialect.COHERE, v2, "Cohere v2 rerank", CohereV2Request, CohereV2Response),
    ]


def _results(documents: list[Document], ranked, with_documents: bool) -> list[dict]:
    results = []
    for r in ranked:
        result: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if with_documents:
            document = documents[r.index]
            result["document"] = {"text": document} if isinstance(document, str) else document
        results.append(result)
    return results


def _usage(tokens: int) -> dict:
    """Jina's and vLLM's usage (vLLM's prompt tokens are all of its tokens)."""
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def _meta(version: str, pairs: int) -> dict:
    return {"api_version": {"version": version},
            "billed_units": {"search_units": max(1, math.ceil(pairs / DOCUMENTS_PER_SEARCH_UNIT))}}
