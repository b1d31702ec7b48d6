"""vLLM's score and rerank APIs over HTTP:

- ``POST /score`` and ``/v1/score``: ``{model, text_1, text_2}`` (also vLLM's newer spellings of the two
  sides: ``queries`` + ``documents``, ``queries`` + ``items``, ``data_1`` + ``data_2``). Each side is a string
  or a list; pairs as vLLM makes them: 1:1, 1:N (the one query with every document) or N:N (pairwise). The
  answer is ``{id, object: "list", created, model, data: [{index, object: "score", score}], usage}`` in pair
  order, not sorted. Pairs are grouped by query, one core call per distinct query, run together.
- ``POST /rerank`` with ``documents`` in the body (TEI's ``/rerank`` takes ``texts``: the body picks the API):
  ``{model, query, documents, top_n}`` → ``{id, model, usage, results: [{index, document: {text},
  relevance_score}]}`` best first, ``top_n`` 0 or absent meaning all. On ``/v1/rerank`` and ``/v2/rerank`` the
  Cohere routes answer vLLM's bodies; their answers carry vLLM's fields too (api/cohere.py).

``score`` and ``relevance_score`` are reranker.v1's score: sigmoid of the model's logit (the logit with
``use_activation: false``). As vLLM, a pair over the model's max input length is refused unless
``truncate_prompt_tokens`` is sent; -1 (or a value at least the max input length) then cuts the document,
at its start with ``truncation_side: "left"``. Unknown fields (LiteLLM's ``return_documents``,
``rank_fields``, ...) are ignored, as vLLM does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Literal, TypeVar

from pydantic import BaseModel, Field

from ara_reranker_server.api.calls import Calls, Served
from ara_reranker_server.api.cohere import Document, texts_of
from ara_reranker_server.api.http import Dialect, Instructed, Route
from ara_reranker_server.core_types import RerankJob
from ara_reranker_server.errors import InvalidRequest, RerankerError

__all__ = ["routes", "API"]

API = "vllm"
# vLLM's spellings of a score request's two sides, the oldest first.
SIDES = (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2"))
T = TypeVar("T")

Side = str | list[str]


class VllmCommon(Instructed):
    """Fields both vLLM requests take: the model, what to do with a pair over the max input length, the activation."""

    model: str | None = Field(None, description="A served model's name or hub id (absent: the default model)")
    truncate_prompt_tokens: int | None = Field(
        None, ge=-1, description="Absent: refuse a pair over the max input length; -1: cut it to the max input length")
    truncation_side: Literal["left", "right"] | None = Field(None, description="Which end of a document is cut (default right)")
    use_activation: bool | None = Field(None, description="false: the model's logit instead of sigmoid(logit)")


class VllmScoreRequest(VllmCommon):
    """vLLM score request: one pair of sides (text_1/text_2, queries/documents, queries/items or data_1/data_2)."""

    text_1: Side | None = None
    text_2: Side | None = None
    queries: Side | None = None
    documents: Side | None = None
    items: Side | None = None
    data_1: Side | None = None
    data_2: Side | None = None


class VllmRerankRequest(VllmCommon):
    """vLLM rerank request."""

    query: str
    documents: list[Document] = Field(description="Strings, or objects with a text field")
    top_n: int = Field(0, ge=0, description="Return only the best top_n (0 or absent: all)")


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class VllmScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


class RerankDocument(BaseModel):
    text: str


class VllmRerankResult(BaseModel):
    index: int
    document: RerankDocument
    relevance_score: float


class VllmRerankResponse(BaseModel):
    id: str
    model: str
    usage: Usage
    results: list[VllmRerankResult]


def pairs_of(body: VllmScoreRequest) -> tuple[list[str], list[str]]:
    """The (query, document) pairs a score request asks for, as vLLM pairs its two sides."""
    given = [(a, b) for a, b in SIDES if getattr(body, a) is not None or getattr(body, b) is not None]
    if not given:
        raise InvalidRequest("text_1: missing (send text_1 and text_2, or queries and documents)", field="text_1")
    first, second = given[0]
    left, right = ([v] if isinstance(v, str) else v for v in (getattr(body, first), getattr(body, second)))
    if not left:
        raise InvalidRequest(f"{first}: at least one text element must be given", field=first)
    if not right:
        raise InvalidRequest(f"{second}: at least one text_pair element must be given", field=second)
    if len(left) > 1 and len(left) != len(right):
        raise InvalidRequest(f"{first} has {len(left)} texts and {second} {len(right)}: input lengths must be either "
                             f"1:1, 1:N or N:N", field=second)
    return (left * len(right) if len(left) == 1 else left), right


def job_of(calls: Calls, body: VllmCommon, query: str, documents: list[str], top_k: int | None = None) -> tuple[str, RerankJob]:
    """The model name and the job, with vLLM's truncation and activation."""
    name = body.model or ""
    cut = body.truncate_prompt_tokens
    if cut is not None and cut != -1:
        limit = calls.models.get(name).info.max_input_length
        if cut < limit:
            raise InvalidRequest(f"truncate_prompt_tokens={cut}: pairs are cut to the model's max input length {limit}; "
                                 f"send -1 (or leave it out to refuse a longer pair)", field="truncate_prompt_tokens")
    return name, RerankJob(query=query, documents=documents, top_k=top_k, raw_scores=body.use_activation is False,
                           truncate=cut is not None, from_start=body.truncation_side == "left",
                           instruction=body.instruction)


async def all_of(awaitables: list[Awaitable[T]]) -> list[T]:
    """Every call's result in order; the first failure cancels the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def routes(calls: Calls) -> list[Route]:
    async def score(body: VllmScoreRequest, request_id: str):
        try:
            queries, documents = pairs_of(body)
            limit = calls.models.default.reranker.limits.max_documents
            if len(documents) > limit:
                raise InvalidRequest(f"{len(documents)} pairs exceed max_documents={limit}; split the request")
        except RerankerError as exc:
            calls.refused(API, request_id, exc, time.perf_counter())
            raise
        groups: dict[str, list[int]] = {}
        for position, query in enumerate(queries):
            groups.setdefault(query, []).append(position)

        async def group(query: str, positions: list[int]) -> tuple[list[int], Served]:
            return positions, await calls.rerank(API, request_id, lambda: job_of(calls, body, query, [documents[i] for i in positions]))

        answered = await all_of([group(query, positions) for query, positions in groups.items()])
        scores: list[float] = [0.0] * len(documents)
        for positions, served in answered:
            for r in served.outcome.results:
                scores[positions[r.index]] = r.score
        tokens = sum(served.outcome.input_tokens for _, served in answered)
        return {
            "id": f"score-{request_id}", "object": "list", "created": int(time.time()), "model": answered[0][1].model.name,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }, {}

    async def rerank(body: VllmRerankRequest, request_id: str):
        texts: list[str] = []

        def build() -> tuple[str, RerankJob]:
            texts.extend(texts_of(body.documents, None))
            return job_of(calls, body, body.query, texts, body.top_n or None)

        served = await calls.rerank(API, request_id, build)
        outcome = served.outcome
        return {
            "id": f"rerank-{request_id}", "model": served.model.name,
            "usage": {"prompt_tokens": outcome.input_tokens, "total_tokens": outcome.input_tokens},
            "results": [_result(r, texts) for r in outcome.results],
        }, {}

    return [
        *(Route("POST", path, API, Dialect.VLLM, score, "vLLM score: pairs in input order", VllmScoreRequest, VllmScoreResponse)
          for path in ("/score", "/v1/score")),
        Route("POST", "/rerank", API, Dialect.VLLM, rerank, "vLLM rerank (a body with documents)", VllmRerankRequest,
              VllmRerankResponse, when="documents"),
    ]


def _result(ranked, texts: list[str]) -> dict[str, Any]:
    return {"index": ranked.index, "document": {"text": texts[ranked.index]}, "relevance_score": ranked.score}
