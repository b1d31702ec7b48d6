"""NVIDIA NIM's reranking API (NeMo Retriever text reranking) over HTTP:

- ``POST /v1/ranking`` ``{model, query: {text}, passages: [{text}], truncate, top_k}`` →
  ``{rankings: [{index, logit}], usage}``, best first by the model's raw logit. The clients keep the first
  ``top_n`` rankings as sent, unsorted, so the order is the answer. Also served at ``/ranking`` (LlamaIndex
  with a base URL without ``/v1``), ``//ranking`` and ``/v1//ranking`` (Haystack with a trailing ``/``),
  and ``/v1/retrieval/{model}/reranking`` (LiteLLM's ``nvidia_nim/``: the model in the path).
- ``GET /v1/models`` (and ``/models``): every name a request may use, OpenAI's model-list shape. LlamaIndex
  refuses a model name this list lacks; LangChain takes the first listed as the default.
- ``GET /v1/health/live`` and ``/v1/health/ready`` (503 until a Triton endpoint has the default model ready),
  open without an API key.

``truncate`` is NIM's: ``NONE`` (the default, as NIM) refuses a pair over the model's max input length with
422, ``END`` cuts the passage's end. ``model`` null or absent is the default model; LiteLLM writes a name's
``_`` as ``.`` in the body, and that spelling finds the model too.
"""

from __future__ import annotations

import time
from typing import Callable, Literal

from pydantic import BaseModel, Field

from ara_reranker_server.api.calls import Calls
from ara_reranker_server.api.http import Dialect, Instructed, Lenient, Route
from ara_reranker_server.core_types import RerankJob
from ara_reranker_server.errors import BackendUnavailable, EmptyRequest

__all__ = ["routes", "API", "RANKING_PATHS"]

API = "nim"
# Where NIM's clients post a ranking: LangChain and Haystack {base}/v1/ranking, LlamaIndex {base_url}/ranking
# as given, Haystack with a trailing "/" in its URL /v1//ranking.
RANKING_PATHS = ("/v1/ranking", "/ranking", "/v1//ranking", "//ranking")
OWNER = "ara-reranker"


class Text(Lenient):
    text: str


class NimRankingRequest(Instructed):
    """NIM ranking request."""

    model: str | None = Field(None, description="A served model's name or hub id (null or absent: the default model)")
    query: Text
    passages: list[Text]
    truncate: Literal["NONE", "END"] = Field(
        "NONE", description="NONE: refuse a pair over the max input length (422); END: cut the passage's end")
    top_k: int | None = Field(None, description="Return only the best top_k (default: all)")


class Ranking(BaseModel):
    index: int
    logit: float


class NimUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class NimRankingResponse(BaseModel):
    rankings: list[Ranking]
    usage: NimUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str = Field(description="The name the model is served under (equal to id for that name)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    object: Literal["health-response"] = "health-response"
    message: str


def litellm_spelling(name: str) -> str:
    """How LiteLLM's ``nvidia_nim/`` writes a model name in the body: ``_`` as ``.``."""
    return name.replace("_", ".")


def routes(calls: Calls, healthy: Callable[[], bool]) -> list[Route]:
    """``healthy()``: whether a Triton endpoint has the default model ready (``/v1/health/ready``)."""
    names = calls.models.names()
    respelled = {litellm_spelling(n): n for n in names if "_" in n and litellm_spelling(n) not in names}
    created = int(time.time())

    async def rank(body: NimRankingRequest, request_id: str):
        def build() -> tuple[str, RerankJob]:
            if not body.passages:
                raise EmptyRequest("passages is empty: send at least one passage", field="passages")
            name = body.model or ""
            return respelled.get(name, name), RerankJob(query=body.query.text, documents=[p.text for p in body.passages],
                                                        top_k=body.top_k, truncate=body.truncate == "END",
                                                        instruction=body.instruction)

        outcome = (await calls.rerank(API, request_id, build)).outcome
        return {
            "rankings": [{"index": r.index, "logit": r.logit} for r in outcome.results],
            "usage": {"prompt_tokens": outcome.input_tokens, "total_tokens": outcome.input_tokens},
        }, {}

    async def models(body: None, request_id: str):
        calls.info(API)
        cards = []
        for name in [*names, *respelled]:
            served = calls.models.get(respelled.get(name, name))
            cards.append({"id": name, "object": "model", "created": created, "owned_by": OWNER, "root": served.name})
        return {"object": "list", "data": cards}, {}

    async def live(body: None, request_id: str):
        return {"object": "health-response", "message": "Service is live."}, {}

    async def ready(body: None, request_id: str):
        if not healthy():
            raise BackendUnavailable("not ready: no Triton endpoint has the default model ready")
        return {"object": "health-response", "message": "Service is ready."}, {}

    ranking = [Route("POST", path, API, Dialect.NIM, rank, "NVIDIA NIM ranking", NimRankingRequest, NimRankingResponse)
               for path in RANKING_PATHS]
    return [
        *ranking,
        Route("POST", "/v1/retrieval/{model:.+}/reranking", API, Dialect.NIM, rank,
              "NVIDIA NIM ranking, the model named in the path (LiteLLM nvidia_nim/)", NimRankingRequest, NimRankingResponse),
        *(Route("GET", path, API, Dialect.NIM, models, "Every model name served (OpenAI's model list)", None, ModelList,
                counted="Info") for path in ("/v1/models", "/models")),
        Route("GET", "/v1/health/live", API, Dialect.NIM, live, "NIM liveness: 200 while the gateway runs", None, Health,
              open=True),
        Route("GET", "/v1/health/ready", API, Dialect.NIM, ready, "NIM readiness: 200 while the default model is served, else 503",
              None, Health, open=True),
    ]
