"""The reranking core: one request's walk, independent of every transport:
validate (``validation``) -> score-cache lookup -> admit -> tokenize (off the event loop, slice by slice) -> score in length-sorted
chunks -> rank by logit -> score-cache fill.

``Reranker.rerank`` takes a ``RerankJob`` and returns a ``RerankOutcome`` (core_types.py); it reaches the model only
through the ``Scorer`` protocol. Its parts each live in their own module: ``validation``, ``admission``, ``chunking``, ``tokenization``, ``windows``, ``score_cache``, ``ranking``.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from ara_reranker_server.admission import Admission
from ara_reranker_server.chunking import score_in_chunks
from ara_reranker_server.core_types import Limits, Ranked, RerankJob, RerankOutcome, Scorer
from ara_reranker_server.dispatch import Dispatcher
from ara_reranker_server.errors import DeadlineExceeded, InvalidRequest
from ara_reranker_server.ranking import rank_by_logits, sigmoid
from ara_reranker_server.score_cache import ScoreCache
from ara_reranker_server.tokenization import PairTokenizer, Tokenized
from ara_reranker_server.tracing import NO_TRACING, Tracing
from ara_reranker_server.validation import validate
from ara_reranker_server.windows import Window, Windows, best_rows, resolve

__all__ = ["Reranker"]

# Bound on the caller's time the gateway keeps for itself, to answer DEADLINE_EXCEEDED before the caller's
# own deadline cancels the call (at most this, at most a tenth of the caller's time).
DEADLINE_MARGIN_S = 0.05
# Documents tokenized per tokenizer job: a large request is tokenized slice by slice, so that other
# callers' requests get the tokenizer threads in between.
TOKENIZE_SLICE = 32
# A request of one slice and at most this many characters (query and documents) is tokenized on the event
# loop (well under a millisecond) instead of on a tokenizer thread: two thread hops cost more than that.
INLINE_CHARS = 4096
# A request of more than one slice or of more characters than this (several chunks of model work) is tokenized on
# the tokenizer's background threads, at a lower CPU priority: small calls on the same cores go first.
BACKGROUND_CHARS = 1 << 18


class Reranker:
    """Ranks documents for a query with a cross-encoder behind a ``Scorer``."""

    def __init__(self, tokenizer: PairTokenizer, scorer: Scorer, limits: Limits, default_timeout_s: float, *,
                 name: str = "", admission: Admission | None = None, token_admission: Admission | None = None,
                 cache: ScoreCache | None = None, dispatcher: Dispatcher | None = None, tracing: Tracing = NO_TRACING) -> None:
        """``admission`` / ``token_admission``: bounds shared with the other served models (``name``
        is this model's share); by default this model's own. ``cache``: the score cache (shared by the
        served models: its keys hold the model's name); None: none. ``dispatcher``: the order in which this
        model's chunks go to Triton (None: all at once). ``tracing``: a span per stage."""
        self.dispatcher = dispatcher
        self.cache = cache
        self.tracing = tracing
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.limits = limits
        self.name = name
        self.chunk_size = limits.chunk_size  # lowered to Triton's max_batch_size once known (set_chunk_size)
        self.default_timeout_s = default_timeout_s
        self.admission = admission or Admission(limits.max_inflight_pairs, "max_inflight_pairs", "pairs", (name,))
        self.token_admission = token_admission or Admission(limits.max_inflight_tokens, "max_inflight_tokens", "tokens", (name,))

    def set_chunk_size(self, chunk_size: int) -> None:
        self.chunk_size = max(1, chunk_size)

    async def rerank(self, job: RerankJob, timeout_s: float | None = None) -> RerankOutcome:
        """Score and rank; ``timeout_s`` (the caller's time left) bounds the work, a little inside it.
        Documents whose pair is in the score cache are not sent to the model again."""
        validate(job, self.limits)
        if job.instruction and not self.tokenizer.takes_instruction:
            raise InvalidRequest(f"model {self.name or 'served here'} takes no instruction: it is a cross-encoder, "
                                 f"whose input is the query and the document only; send the request without one")
        budget = timeout_s if timeout_s is not None else self.default_timeout_s
        deadline = time.monotonic() + budget - min(DEADLINE_MARGIN_S, 0.1 * budget)
        n = len(job.documents)
        logits = np.empty(n, dtype=np.float32)
        tokens = np.zeros(n, dtype=np.int64)
        pairs = np.ones(n, dtype=np.int64)  # pairs scored per document (its windows with TRUNCATION_SPLIT)
        truncated = np.zeros(n, dtype=bool)
        best_window: list[Window | None] = [None] * n
        keys, todo = None, list(range(n))
        if self.cache is not None and self.cache.enabled:
            scope = self._cache_scope(job)
            keys = [self.cache.key(scope, job.query, document) for document in job.documents]
            todo = []
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is None:
                    todo.append(i)
                    continue
                logits[i], tokens[i], truncated[i], pairs[i] = hit.logit, hit.tokens, hit.truncated, hit.windows
                best_window[i] = Window(*hit.window) if hit.window is not None else None
        started = tokenized = inferred = time.perf_counter()
        if todo:
            encoded, row_logits, (tokenized, inferred) = await self._compute(job, todo, deadline)
            owners = np.asarray(encoded.owners)
            row_tokens = np.fromiter(map(len, encoded.pairs), dtype=np.int64, count=len(encoded.pairs))
            best = best_rows(row_logits, owners, len(todo))
            members = np.asarray(todo)
            logits[members] = row_logits[best]
            tokens[members] = np.bincount(owners, weights=row_tokens, minlength=len(todo)).astype(np.int64)
            pairs[members] = np.bincount(owners, minlength=len(todo))
            truncated[[todo[j] for j in encoded.truncated]] = True
            if encoded.windows is not None:
                for j, row in enumerate(best):
                    best_window[todo[j]] = encoded.windows[row]
            if keys is not None:
                for i in todo:
                    w = best_window[i]
                    self.cache.put(keys[i], float(logits[i]), int(tokens[i]), bool(truncated[i]), int(pairs[i]),
                                   (w.index, w.start_char, w.end_char) if w is not None else None)
        with self.tracing.span("ranking", {"reranker.documents": n}):
            scores = logits if job.raw_scores else sigmoid(logits)
            order = rank_by_logits(logits)
            if job.top_k is not None:
                order = order[: job.top_k]
        return RerankOutcome(
            results=[Ranked(int(i), float(scores[i]), float(logits[i]), best_window[i]) for i in order],
            documents=n,
            input_tokens=int(tokens.sum()),
            truncated=int(truncated.sum()),
            tokenization_s=tokenized - started,
            inference_s=inferred - tokenized,
            windows=int(pairs.sum()),
            cached=n - len(todo),
        )

    async def _compute(self, job: RerankJob, todo: list[int], deadline: float) -> tuple[Tokenized, np.ndarray, tuple[float, float]]:
        """Tokenize and score the documents ``todo`` (positions in the request): their pairs (owners:
        positions in ``todo``), each pair's logit, and when tokenizing and scoring ended."""
        # Pairs are admitted one per document before tokenizing; a split request's are its windows, known
        # once tokenized (swapped in with no await between: as one request alone, a big one still runs).
        admitted = len(todo)
        self._admit(self.admission, admitted)
        try:
            with self.tracing.span("tokenization", {"reranker.documents": len(todo)}) as span:
                encoded = await self._tokenize(job, todo, deadline)
                span.set_attribute("reranker.pairs", len(encoded.pairs))
            tokenized = time.perf_counter()
            if len(encoded.pairs) != admitted:
                self.admission.release(admitted, self.name)
                admitted = 0
                self._admit(self.admission, len(encoded.pairs))
                admitted = len(encoded.pairs)
            tokens = sum(map(len, encoded.pairs))
            self._admit(self.token_admission, tokens)
            try:
                row_logits = await score_in_chunks(encoded.pairs, self.scorer, self.chunk_size, self.tokenizer.pad_id,
                                                     encoded.types, deadline, self.dispatcher,
                                                     job.priority, self.limits.max_chunk_tokens)
            finally:
                self.token_admission.release(tokens, self.name)
            return encoded, row_logits, (tokenized, time.perf_counter())
        finally:
            self.admission.release(admitted, self.name)

    def _admit(self, admission: Admission, amount: int) -> None:
        """Take ``amount`` from a bound (Overloaded at once beyond it: admission never waits), in its own span."""
        with self.tracing.span("admission", {"reranker.admission.unit": admission.unit, "reranker.admission.amount": amount,
                                             "reranker.admission.in_flight": admission.in_flight}):
            admission.acquire(amount, self.name)

    def _cache_scope(self, job: RerankJob) -> str:
        """Everything besides the query and the document that the model's answer for a pair depends on."""
        split = (job.split.window_tokens, job.split.overlap_tokens, job.split.max_windows) if job.split else None
        prompt = self.tokenizer.prompt
        instruction = (job.instruction or prompt.default_instruction) if prompt is not None else ""
        return (f"{self.name}|{self.tokenizer.max_length}|{job.truncate}|{job.from_start}|{job.max_document_tokens}|{split}"
                f"|{len(instruction)}:{instruction}")

    async def _tokenize(self, job: RerankJob, todo: list[int], deadline: float) -> Tokenized:
        """Pairs of the documents ``todo`` (owners: positions in ``todo``), tokenized one slice of documents
        at a time off the event loop (other callers' slices get the tokenizer threads in between). The
        query goes with the first slice; a small request (one slice, few characters) is tokenized on the
        event loop itself, which costs less than the two thread hops would."""
        loop = asyncio.get_running_loop()
        tok = self.tokenizer
        slices = [todo[start : start + TOKENIZE_SLICE] for start in range(0, len(todo), TOKENIZE_SLICE)]

        def first():
            prepared = self._prepare(job)
            return prepared, tok.encode_slice(*prepared, [job.documents[i] for i in slices[0]], job, slices[0])

        chars = len(job.query) + sum(len(job.documents[i]) for i in slices[0])
        small = len(slices) == 1 and chars <= INLINE_CHARS
        large = len(slices) > 1 or chars > BACKGROUND_CHARS
        executor = tok.background if large else tok.executor
        prepared, part = first() if small else await loop.run_in_executor(executor, first)
        windows = prepared[2]
        out = Tokenized([], [], [] if windows is not None else None)
        for k, indices in enumerate(slices):
            if k:
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded("deadline exceeded while tokenizing")
                part = await loop.run_in_executor(executor, tok.encode_slice, *prepared,
                                                  [job.documents[i] for i in indices], job, indices)
            out.extend(part, k * TOKENIZE_SLICE)
            if windows is not None and len(out.pairs) > self.limits.max_windows:
                raise InvalidRequest(
                    f"documents up to {indices[-1]} already make {len(out.pairs)} windows; "
                    f"max_windows_per_request={self.limits.max_windows} (lower max_windows or the overlap, "
                    f"raise window_tokens, or send fewer documents)"
                )
        return out

    def _prepare(self, job: RerankJob) -> tuple[object, int, Windows | None]:
        """The query's encoding, the document tokens a pair has room for, and the windows (TRUNCATION_SPLIT)."""
        tok = self.tokenizer
        if job.split is None:
            return *tok.room(job.query, job.instruction), None
        query_side, fixed = tok.query_side(job.query, job.instruction)
        windows = resolve(job.split, tok.max_length, fixed, self.limits.max_windows)
        return query_side, windows.room, windows
