"""The reranking core, independent of gRPC: validate -> tokenize -> chunk -> score -> sigmoid -> sort.

``Reranker.rerank`` takes a ``RerankJob`` and returns a ``RerankOutcome``. It talks to the model only
through the ``Scorer`` protocol (``TritonScorer`` in production, an in-process scorer in unit tests).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from server.errors import InvalidRequest, Overloaded

__all__ = ["Limits", "RerankJob", "Ranked", "RerankOutcome", "Scorer", "Reranker", "Admission", "sigmoid"]


class Scorer(Protocol):
    """Turns one right-padded chunk of token ids into float32 logits [rows]."""

    async def score(self, input_ids: np.ndarray, attention_mask: np.ndarray, deadline: float) -> np.ndarray: ...


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (shown by Info)."""

    max_documents: int
    max_query_chars: int
    max_document_chars: int
    chunk_size: int
    max_inflight_pairs: int


@dataclass(frozen=True)
class RerankJob:
    query: str
    documents: Sequence[str]
    top_k: int | None = None
    raw_scores: bool = False
    truncate: bool = True  # False: refuse pairs longer than the model's max length


@dataclass(frozen=True)
class Ranked:
    index: int
    score: float


@dataclass(frozen=True)
class RerankOutcome:
    results: list[Ranked]  # best first, ties by lower index, cut to top_k
    documents: int
    input_tokens: int
    truncated: int
    tokenization_s: float
    inference_s: float


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable sigmoid computed in float32."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


class Admission:
    """A bound on pairs in flight: beyond it, refuse at once (no unbounded queue)."""

    def __init__(self, max_pairs: int) -> None:
        self.max_pairs = max_pairs
        self.in_flight = 0

    def acquire(self, pairs: int) -> None:
        if self.in_flight + pairs > self.max_pairs:
            raise Overloaded(
                f"overloaded: {self.in_flight} pairs in flight, {pairs} more would exceed max_inflight_pairs={self.max_pairs}; retry later"
            )
        self.in_flight += pairs

    def release(self, pairs: int) -> None:
        self.in_flight -= pairs


class PairTokenizer:
    """The model's own fast tokenizer, used from a small thread pool (one clone per thread: a
    Hugging Face fast tokenizer must not be used by two threads at once)."""

    def __init__(self, tokenizer, max_length: int, threads: int) -> None:
        self._prototype = tokenizer
        self._local = threading.local()
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.special_tokens = tokenizer.num_special_tokens_to_add(pair=True)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize")

    def _tokenizer(self):
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            tok = self._local.tokenizer = copy.deepcopy(self._prototype)
        return tok

    def encode(self, query: str, documents: Sequence[str], truncate: bool) -> tuple[list[list[int]], int]:
        """Token ids of every (query, document) pair, and how many documents were truncated.

        Pairs that fit are encoded once; only over-long ones are re-encoded with the document cut."""
        tok = self._tokenizer()
        query_tokens = len(tok(query, add_special_tokens=False)["input_ids"])
        if query_tokens + self.special_tokens >= self.max_length:
            raise InvalidRequest(
                f"query has {query_tokens} tokens; with a document it must have fewer than "
                f"{self.max_length - self.special_tokens} (max input length {self.max_length})"
            )
        ids = tok([query] * len(documents), list(documents), truncation=False, return_attention_mask=False)["input_ids"]
        too_long = [i for i, row in enumerate(ids) if len(row) > self.max_length]
        if too_long and not truncate:
            i = too_long[0]
            raise InvalidRequest(
                f"document {i} makes {len(ids[i])} tokens with the query; the model takes at most {self.max_length} "
                f"({len(too_long)} document(s) too long; use TRUNCATION_END to cut them)"
            )
        if too_long:
            cut = tok(
                [query] * len(too_long), [documents[i] for i in too_long],
                truncation="only_second", max_length=self.max_length, return_attention_mask=False,
            )["input_ids"]
            for i, row in zip(too_long, cut):
                ids[i] = row
        return ids, len(too_long)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Reranker:
    """Ranks documents for a query with a cross-encoder behind a ``Scorer``."""

    def __init__(self, tokenizer: PairTokenizer, scorer: Scorer, limits: Limits, default_timeout_s: float) -> None:
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.limits = limits
        self.default_timeout_s = default_timeout_s
        self.admission = Admission(limits.max_inflight_pairs)

    def validate(self, job: RerankJob) -> None:
        """Raise InvalidRequest naming the first thing wrong with ``job``."""
        lim = self.limits
        if not job.query.strip():
            raise InvalidRequest("query is empty")
        if not job.documents:
            raise InvalidRequest("documents is empty: send at least one document")
        if len(job.documents) > lim.max_documents:
            raise InvalidRequest(f"{len(job.documents)} documents exceed max_documents={lim.max_documents}; split the request")
        if len(job.query) > lim.max_query_chars:
            raise InvalidRequest(f"query has {len(job.query)} characters; max_query_chars={lim.max_query_chars}")
        for i, doc in enumerate(job.documents):
            if len(doc) > lim.max_document_chars:
                raise InvalidRequest(f"document {i} has {len(doc)} characters; max_document_chars={lim.max_document_chars}")
        if job.top_k is not None and job.top_k <= 0:
            raise InvalidRequest(f"top_k must be at least 1 when set; got {job.top_k}")

    async def rerank(self, job: RerankJob, timeout_s: float | None = None) -> RerankOutcome:
        """Score and rank; ``timeout_s`` (the caller's deadline) bounds the Triton work."""
        self.validate(job)
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.default_timeout_s)
        pairs = len(job.documents)
        self.admission.acquire(pairs)
        try:
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            ids, truncated = await loop.run_in_executor(
                self.tokenizer.executor, self.tokenizer.encode, job.query, job.documents, job.truncate
            )
            tokenized = time.perf_counter()
            logits = await self._score(ids, deadline)
            inferred = time.perf_counter()
        finally:
            self.admission.release(pairs)
        scores = logits if job.raw_scores else sigmoid(logits)
        order = np.lexsort((np.arange(pairs), -scores.astype(np.float64)))  # best first, ties by lower index
        if job.top_k is not None:
            order = order[: job.top_k]
        return RerankOutcome(
            results=[Ranked(int(i), float(scores[i])) for i in order],
            documents=pairs,
            input_tokens=sum(len(row) for row in ids),
            truncated=truncated,
            tokenization_s=tokenized - started,
            inference_s=inferred - tokenized,
        )

    async def _score(self, ids: list[list[int]], deadline: float) -> np.ndarray:
        """Length-sorted chunks of ``chunk_size`` pairs, each padded to its own longest, sent concurrently."""
        lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        logits = np.empty(len(ids), dtype=np.float32)
        size = self.limits.chunk_size
        chunks = [order[start : start + size] for start in range(0, len(order), size)]

        async def run(members: np.ndarray) -> None:
            width = int(lengths[members[0]])
            input_ids = np.full((len(members), width), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.zeros((len(members), width), dtype=np.int64)
            for j, m in enumerate(members):
                input_ids[j, : lengths[m]] = ids[m]
                mask[j, : lengths[m]] = 1
            logits[members] = await self.scorer.score(input_ids, mask, deadline)

        # A TaskGroup cancels the other chunks (and their Triton calls) as soon as one fails.
        try:
            async with asyncio.TaskGroup() as group:
                for members in chunks:
                    group.create_task(run(members))
        except ExceptionGroup as failed:
            raise _first_leaf(failed) from None
        return logits


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first real error of a failed TaskGroup (the others were cancelled because of it)."""
    for exc in group.exceptions:
        return _first_leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
    return group
