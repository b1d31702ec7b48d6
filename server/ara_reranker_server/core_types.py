"""What the reranking core is asked and what it answers, in its own types (no transport's): a ``RerankJob`` under
``Limits`` in, a ``RerankOutcome`` of ``Ranked`` documents out; and the ``Scorer`` it reaches the model through
(``TritonScorer`` in production, an in-process scorer in unit tests). Each API converts its request into a job."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol, Sequence

import numpy as np

from ara_reranker_server.settings import Settings, setting_default
from ara_reranker_server.windows import Split, Window

__all__ = ["Scorer", "Limits", "RerankJob", "Ranked", "RerankOutcome"]


class Scorer(Protocol):
    """Turns one right-padded chunk of token ids (and token type ids, for BERT-style models) into float32
    logits [rows]."""

    async def score(self, input_ids: np.ndarray, attention_mask: np.ndarray, deadline: float,
                    token_type_ids: np.ndarray | None = None, priority: str = "interactive") -> np.ndarray: ...


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: the gateway's settings of these names (``of``), whose defaults are Settings'."""

    max_documents: int
    max_query_chars: int
    max_document_chars: int
    chunk_size: int
    max_inflight_pairs: int
    max_inflight_tokens: int = setting_default("max_inflight_tokens")
    max_windows: int = setting_default("max_windows_per_request")  # of one TRUNCATION_SPLIT request, all documents together
    max_chunk_tokens: int = setting_default("max_chunk_tokens")  # a chunk of long pairs holds fewer than chunk_size

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        """The limits ``settings`` set."""
        return cls(**{f.name: getattr(settings, "max_windows_per_request" if f.name == "max_windows" else f.name)
                      for f in fields(cls)})


@dataclass(frozen=True)
class RerankJob:
    query: str
    documents: Sequence[str]
    top_k: int | None = None
    raw_scores: bool = False
    truncate: bool = True  # False: refuse pairs longer than the model's max length
    split: Split | None = None  # TRUNCATION_SPLIT: score each document's windows (``truncate`` unused)
    from_start: bool = False  # cut a long document's start (keep its last tokens) instead of its end
    max_document_tokens: int | None = None  # cut each document to this many tokens (Cohere's max_tokens_per_doc)
    priority: str = "interactive"  # or "batch": served after interactive work, never starved (dispatch.py)
    instruction: str | None = None  # a causal-LM reranker's task instruction (None or empty: the model's default)


@dataclass(frozen=True)
class Ranked:
    index: int
    score: float  # sigmoid(logit) in float32, or the logit with raw_scores
    logit: float  # the model's logit: the ranking's key
    window: Window | None = None  # with TRUNCATION_SPLIT: the best window, whose logit this is


@dataclass(frozen=True)
class RerankOutcome:
    results: list[Ranked]  # best first, ties by lower index, cut to top_k
    documents: int
    input_tokens: int
    truncated: int
    tokenization_s: float
    inference_s: float
    windows: int = 0  # pairs scored: one per document, or each document's windows with TRUNCATION_SPLIT
    cached: int = 0  # documents answered from the score cache (not sent to the model)
