"""The reranking core, independent of gRPC: validate -> tokenize -> chunk -> score -> sigmoid -> sort.

``Reranker.rerank`` takes a ``RerankJob`` and returns a ``RerankOutcome``. It talks to the model only
through the ``Scorer`` protocol (``TritonScorer`` in production, an in-process scorer in unit tests).
"""

from __future__ import annotations

import asyncio
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
    """The served model's own fast tokenizer (its ``tokenizer.json``), applied to (query, document) pairs.

    One ``tokenizers.Tokenizer`` serves every thread: encoding does not mutate it, and truncation is
    done here on the document's encoding (never the query's), so no per-call state is set on it.
    A pair is the query and the document encoded separately and joined by the model's own
    post-processor, which is exactly what encoding the pair does."""

    def __init__(self, tokenizer, max_length: int, pad_id: int, threads: int) -> None:
        self._tok = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        self.special_tokens = tokenizer.post_processor.num_special_tokens_to_add(True) if tokenizer.post_processor else 0
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize")

    def encode(self, query: str, documents: Sequence[str], truncate: bool) -> tuple[list[list[int]], int]:
        """Token ids of every (query, document) pair, and how many documents were truncated."""
        tok = self._tok
        query_encoding = tok.encode(query, add_special_tokens=False)
        room = self.max_length - self.special_tokens - len(query_encoding.ids)
        if room < 1:
            raise InvalidRequest(
                f"query has {len(query_encoding.ids)} tokens; with a document it must have fewer than "
                f"{self.max_length - self.special_tokens} (max input length {self.max_length})"
            )
        encodings = tok.encode_batch(list(documents), add_special_tokens=False)
        too_long = [i for i, e in enumerate(encodings) if len(e.ids) > room]
        if too_long and not truncate:
            i = too_long[0]
            raise InvalidRequest(
                f"document {i} makes {len(encodings[i].ids) + len(query_encoding.ids) + self.special_tokens} tokens "
                f"with the query; the model takes at most {self.max_length} "
                f"({len(too_long)} document(s) too long; use TRUNCATION_END to cut them)"
            )
        for i in too_long:
            encodings[i].truncate(room)
        ids = [tok.post_process(query_encoding, e, add_special_tokens=True).ids for e in encodings]
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
