"""The reranking core, independent of gRPC: validate -> admit -> tokenize -> chunk -> score -> rank.

``Reranker.rerank`` takes a ``RerankJob`` and returns a ``RerankOutcome``. It talks to the model only
through the ``Scorer`` protocol (``TritonScorer`` in production, an in-process scorer in unit tests).

The ranking is the order of the model's logits as the model returned them (float32, compared in
float64), never of a derived score: float32 sigmoids saturate to exactly 1.0 above a logit of ~16.6 and
would turn different logits into ties. The sigmoid only makes the returned score.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from ara_reranker_server.errors import DeadlineExceeded, EmptyRequest, InvalidRequest, Overloaded
from ara_reranker_server.score_cache import ScoreCache
from ara_reranker_server.windows import Split, Window, Windows, best_rows, resolve, span

__all__ = ["Limits", "RerankJob", "Ranked", "RerankOutcome", "Tokenized", "Scorer", "Reranker", "Admission", "PairTokenizer",
           "sigmoid", "rank_by_logits"]

# Bound on the caller's time the gateway keeps for itself, to answer DEADLINE_EXCEEDED before the caller's
# own deadline cancels the call (at most this, at most a tenth of the caller's time).
DEADLINE_MARGIN_S = 0.05
# Documents tokenized per tokenizer job: a large request is tokenized slice by slice, so that other
# callers' requests get the tokenizer threads in between.
TOKENIZE_SLICE = 32
# A request of one slice and at most this many characters (query and documents) is tokenized on the event
# loop (well under a millisecond) instead of on a tokenizer thread: two thread hops cost more than that.
INLINE_CHARS = 4096
# Characters a document is cut to before tokenizing, per token of room: generous (Arabic and English
# average 3-6 characters per token); an exactness check falls back to the whole document when needed.
CHARS_PER_TOKEN = 16


class Scorer(Protocol):
    """Turns one right-padded chunk of token ids (and token type ids, for BERT-style models) into float32
    logits [rows]."""

    async def score(self, input_ids: np.ndarray, attention_mask: np.ndarray, deadline: float,
                    token_type_ids: np.ndarray | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (shown by Info)."""

    max_documents: int
    max_query_chars: int
    max_document_chars: int
    chunk_size: int
    max_inflight_pairs: int
    max_inflight_tokens: int = 1 << 21
    max_windows: int = 10000  # windows of one TRUNCATION_SPLIT request, all documents together


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


@dataclass
class Tokenized:
    """A request's pairs, ready to score: ``owners[row]`` is the row's document (a document's rows are
    consecutive); ``windows[row]`` its window with TRUNCATION_SPLIT (None otherwise)."""

    pairs: list
    owners: list[int]
    windows: list[Window] | None
    truncated: set[int] = field(default_factory=set)  # the documents cut (or with windows left out)

    def extend(self, other: "Tokenized", first_index: int) -> None:
        """Append the pairs of the slice of documents that starts at ``first_index``."""
        self.pairs += other.pairs
        self.owners += [first_index + i for i in other.owners]
        if self.windows is not None:
            self.windows += other.windows or []
        self.truncated |= {first_index + i for i in other.truncated}


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable sigmoid computed in float32 (the returned score; never a ranking key)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def rank_by_logits(logits: np.ndarray) -> np.ndarray:
    """Indices best first: higher logit first, equal logits keep the lower index first."""
    logits = np.asarray(logits).astype(np.float64)  # upcast before anything else (fp16 from GPUs)
    return np.lexsort((np.arange(len(logits)), -logits))


class Admission:
    """A bound on work in flight (pairs, or tokens), shared by the served models: beyond it, refuse at
    once (no unbounded queue).

    Shared fairly: with n models, one model may hold at most the bound less 1/(2n) of it for each other
    model, so a flood on one leaves every other at least 1/(2n) of the bound. A single request larger
    than its model's cap is admitted only when nothing else is in flight."""

    def __init__(self, limit: int, setting: str, unit: str, owners: Sequence[str] = ("",)) -> None:
        self.limit = limit
        self.setting = setting
        self.unit = unit
        self.in_flight = 0
        self.held = {owner: 0 for owner in owners}
        self.cap = limit - (len(self.held) - 1) * (limit // (2 * len(self.held)))

    def acquire(self, amount: int, owner: str = "") -> None:
        if self.in_flight and (self.in_flight + amount > self.limit or self.held[owner] + amount > self.cap):
            share = "" if len(self.held) == 1 else f" (one model may hold {self.cap}: {self.held[owner]} held by {owner})"
            raise Overloaded(
                f"overloaded: {self.in_flight} {self.unit} in flight, {amount} more would exceed "
                f"{self.setting}={self.limit}{share}; retry later"
            )
        self.in_flight += amount
        self.held[owner] += amount

    def release(self, amount: int, owner: str = "") -> None:
        self.in_flight -= amount
        self.held[owner] -= amount


class PairTokenizer:
    """The served model's own fast tokenizer (its ``tokenizer.json``), applied to (query, document) pairs.

    One ``tokenizers.Tokenizer`` serves every thread: encoding does not mutate it, and truncation is
    done here on the document's encoding (never the query's), so no per-call state is set on it; any
    padding or truncation saved in tokenizer.json is switched off on load (``reset``), as transformers
    does on every call. A pair is the query and the document encoded separately and joined by the
    model's own post-processor, which is exactly what encoding the pair does."""

    def __init__(self, tokenizer, max_length: int, pad_id: int, threads: int, token_type_ids: bool = False) -> None:
        self._tok = self.reset(tokenizer)
        self.max_length = max_length
        self.pad_id = pad_id
        self.token_type_ids = token_type_ids  # BERT-style models: send each pair's token types too
        self.special_tokens = tokenizer.post_processor.num_special_tokens_to_add(True) if tokenizer.post_processor else 0
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize")

    @staticmethod
    def reset(tokenizer):
        """Switch off padding and truncation saved in tokenizer.json: the pair must be the tokenizer's
        plain encoding, cut here (document only) and padded per chunk, as the reference does."""
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return tokenizer

    def encode_query(self, query: str):
        """The query's own tokens (no special tokens), as every pair of the request starts with them."""
        return self._tok.encode(query, add_special_tokens=False)

    def room(self, query: str) -> tuple[object, int]:
        """The query's encoding and how many document tokens fit beside it."""
        query_encoding = self.encode_query(query)
        room = self.max_length - self.special_tokens - len(query_encoding.ids)
        if room < 1:
            raise InvalidRequest(
                f"query has {len(query_encoding.ids)} tokens; with a document it must have fewer than "
                f"{self.max_length - self.special_tokens} (max input length {self.max_length})"
            )
        return query_encoding, room

    def encode(self, query: str, documents: Sequence[str], truncate: bool, from_start: bool = False,
               max_document_tokens: int | None = None) -> tuple[list[list[int]], int]:
        """Token ids of every (query, document) pair, and how many documents were truncated."""
        query_encoding, room = self.room(query)
        job = RerankJob(query, documents, truncate=truncate, from_start=from_start, max_document_tokens=max_document_tokens)
        tokenized = self.encode_slice(query_encoding, room, None, documents, job, range(len(documents)))
        return [pair.ids for pair in tokenized.pairs], len(tokenized.truncated)

    def encode_slice(self, query_encoding, room: int, windows: Windows | None, documents: Sequence[str], job: "RerankJob",
                     indices: Sequence[int]) -> Tokenized:
        """Some of a request's documents (``indices``: their positions in the request, for errors): their
        windows (``windows`` set), else one pair each, cut as ``job`` says."""
        if windows is not None:
            return self.encode_windows(query_encoding, windows, documents, job.max_document_tokens)
        cap = room if job.max_document_tokens is None else min(room, job.max_document_tokens)
        encodings = self._document_encodings(documents, cap, job.from_start)
        too_long = [i for i, e in enumerate(encodings) if len(e.ids) > cap]
        if too_long and not job.truncate:
            i = too_long[0]
            tokens = len(self._tok.encode(documents[i], add_special_tokens=False).ids)  # the whole count, for the message
            if tokens > room:
                raise InvalidRequest(
                    f"document {indices[i]} makes {tokens + self.max_length - room} tokens "
                    f"with the query; the model takes at most {self.max_length} "
                    f"(use TRUNCATION_END to cut it)"
                )
            raise InvalidRequest(f"document {indices[i]} has {tokens} tokens; max_document_tokens={cap} "
                                 f"(use TRUNCATION_END to cut it)")
        for i in too_long:
            encodings[i].truncate(cap, direction="left" if job.from_start else "right")
        pairs = [self._tok.post_process(query_encoding, e, add_special_tokens=True) for e in encodings]
        return Tokenized(pairs, list(range(len(pairs))), None, set(too_long))

    def encode_windows(self, query_encoding, windows: Windows, documents: Sequence[str],
                       max_document_tokens: int | None = None) -> Tokenized:
        """Pair encodings of the first ``max_windows`` windows of each document of one slice (owners:
        positions in the slice), and how many documents had more windows, or more than
        ``max_document_tokens`` tokens (truncated: such a document is cut to them first)."""
        out = Tokenized([], [], [])
        needed = windows.tokens_needed if max_document_tokens is None else min(windows.tokens_needed, max_document_tokens)
        for i, encoding in enumerate(self._document_encodings(documents, needed)):
            cut = max_document_tokens is not None and len(encoding.ids) > max_document_tokens
            if cut:
                encoding.truncate(max_document_tokens)
            encoding.truncate(windows.room, stride=windows.overlap)
            parts = [encoding, *encoding.overflowing]
            if cut or len(parts) > windows.max_windows:
                out.truncated.add(i)
            for w, part in enumerate(parts[: windows.max_windows]):
                # Each part joined on its own: the joined pair's overflowing parts would keep the
                # document's token type 0, where transformers gives the document type 1 in every window.
                out.pairs.append(self._tok.post_process(query_encoding, part, add_special_tokens=True))
                out.owners.append(i)
                out.windows.append(span(part, w))
        return out

    def _document_encodings(self, documents: Sequence[str], room: int, from_start: bool = False) -> list:
        """Each document's encoding, exact in its first ``room`` tokens (its last ones, ``from_start``),
        without tokenizing far more than the model can use: a long document is cut by characters first,
        keeping its start (its end). The cut is kept only when the kept tokens all come from words whole
        in the cut text (so tokenizing the whole document gives the same ones); otherwise the whole
        document is tokenized."""
        cut = room * CHARS_PER_TOKEN
        texts = [d[-cut:] if from_start else d[:cut] for d in documents]
        encodings = self._tok.encode_batch(texts, add_special_tokens=False)
        exact = _exact_suffix if from_start else _exact_prefix
        for i, (document, encoding) in enumerate(zip(documents, encodings)):
            if len(document) > cut and not exact(encoding, room):
                encodings[i] = self._tok.encode(document, add_special_tokens=False)
        return encodings

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _exact_prefix(encoding, room: int) -> bool:
    """Whether the first ``room`` tokens of a cut text's encoding are those of the whole text: there are
    more than ``room`` of them and none of the first ``room`` belongs to the last (possibly cut) word."""
    words = encoding.word_ids
    return len(words) > room and words[room - 1] is not None and words[-1] is not None and words[room - 1] < words[-1]


def _exact_suffix(encoding, room: int) -> bool:
    """Whether the last ``room`` tokens of a text cut at its start are those of the whole text: there are
    more than ``room`` of them and none of the last ``room`` belongs to the first (possibly cut) word."""
    words = encoding.word_ids
    return len(words) > room and words[-room] is not None and words[0] is not None and words[0] < words[-room]


class Reranker:
    """Ranks documents for a query with a cross-encoder behind a ``Scorer``."""

    def __init__(self, tokenizer: PairTokenizer, scorer: Scorer, limits: Limits, default_timeout_s: float, *,
                 name: str = "", admission: Admission | None = None, token_admission: Admission | None = None,
                 cache: ScoreCache | None = None) -> None:
        """``admission`` / ``token_admission``: bounds shared with the other served models (``name``
        is this model's share); by default this model's own. ``cache``: the score cache (shared by the
        served models: its keys hold the model's name); None: none."""
        self.cache = cache
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

    def validate(self, job: RerankJob) -> None:
        """Raise InvalidRequest naming the first thing wrong with ``job``."""
        lim = self.limits
        if not job.query.strip():
            raise InvalidRequest("query is empty")
        if not job.documents:
            raise EmptyRequest("documents is empty: send at least one document")
        if len(job.documents) > lim.max_documents:
            raise InvalidRequest(f"{len(job.documents)} documents exceed max_documents={lim.max_documents}; split the request")
        if len(job.query) > lim.max_query_chars:
            raise InvalidRequest(f"query has {len(job.query)} characters; max_query_chars={lim.max_query_chars}")
        for i, doc in enumerate(job.documents):
            if len(doc) > lim.max_document_chars:
                raise InvalidRequest(f"document {i} has {len(doc)} characters; max_document_chars={lim.max_document_chars}")
        if job.top_k is not None and job.top_k <= 0:
            raise InvalidRequest(f"top_k must be at least 1 when set; got {job.top_k}")
        if job.max_document_tokens is not None and job.max_document_tokens <= 0:
            raise InvalidRequest(f"max_document_tokens must be at least 1 when set; got {job.max_document_tokens}")
        if job.from_start and job.split is not None:
            raise InvalidRequest("a document is cut at its start or split into windows, not both")

    async def rerank(self, job: RerankJob, timeout_s: float | None = None) -> RerankOutcome:
        """Score and rank; ``timeout_s`` (the caller's time left) bounds the work, a little inside it.
        Documents whose pair is in the score cache are not sent to the model again."""
        self.validate(job)
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
            row_tokens = np.fromiter((len(pair.ids) for pair in encoded.pairs), dtype=np.int64, count=len(encoded.pairs))
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
        self.admission.acquire(admitted, self.name)
        try:
            encoded = await self._tokenize(job, todo, deadline)
            tokenized = time.perf_counter()
            if len(encoded.pairs) != admitted:
                self.admission.release(admitted, self.name)
                admitted = 0
                self.admission.acquire(len(encoded.pairs), self.name)
                admitted = len(encoded.pairs)
            tokens = sum(len(pair.ids) for pair in encoded.pairs)
            self.token_admission.acquire(tokens, self.name)
            try:
                row_logits = await self._score(encoded.pairs, deadline)
            finally:
                self.token_admission.release(tokens, self.name)
            return encoded, row_logits, (tokenized, time.perf_counter())
        finally:
            self.admission.release(admitted, self.name)

    def _cache_scope(self, job: RerankJob) -> str:
        """Everything besides the query and the document that the model's answer for a pair depends on."""
        split = (job.split.window_tokens, job.split.overlap_tokens, job.split.max_windows) if job.split else None
        return f"{self.name}|{self.tokenizer.max_length}|{job.truncate}|{job.from_start}|{job.max_document_tokens}|{split}"

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

        small = len(slices) == 1 and len(job.query) + sum(len(job.documents[i]) for i in slices[0]) <= INLINE_CHARS
        prepared, part = first() if small else await loop.run_in_executor(tok.executor, first)
        windows = prepared[2]
        out = Tokenized([], [], [] if windows is not None else None)
        for k, indices in enumerate(slices):
            if k:
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded("deadline exceeded while tokenizing")
                part = await loop.run_in_executor(tok.executor, tok.encode_slice, *prepared,
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
            return *tok.room(job.query), None
        query_encoding = tok.encode_query(job.query)
        windows = resolve(job.split, tok.max_length, tok.special_tokens, len(query_encoding.ids), self.limits.max_windows)
        return query_encoding, windows.room, windows

    async def _score(self, pairs: list, deadline: float) -> np.ndarray:
        """Length-sorted chunks of ``chunk_size`` pairs, each padded to its own longest, sent concurrently."""
        lengths = np.fromiter((len(pair.ids) for pair in pairs), dtype=np.int64, count=len(pairs))
        order = np.argsort(-lengths, kind="stable")
        logits = np.empty(len(pairs), dtype=np.float32)
        size = self.chunk_size
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        with_types = self.tokenizer.token_type_ids

        async def run(members: np.ndarray) -> None:
            input_ids, mask = padded_rows([pairs[m].ids for m in members], self.tokenizer.pad_id)
            types = padded_rows([pairs[m].type_ids for m in members], 0)[0] if with_types else None
            logits[members] = await self.scorer.score(input_ids, mask, deadline, token_type_ids=types)

        # A TaskGroup cancels the other chunks (and their Triton calls) as soon as one fails.
        try:
            async with asyncio.TaskGroup() as group:
                for members in chunks:
                    group.create_task(run(members))
        except ExceptionGroup as failed:
            raise _first_leaf(failed) from None
        return logits


def padded_rows(rows: Sequence[Sequence[int]], pad: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded INT64 rows, ``width`` wide (default: the longest row), and their attention mask:
    the one padding rule, ara_reranker_model.inputs.padded_rows (plain numpy, which model.py imports too)."""
    from ara_reranker_model.inputs import padded_rows as padded

    return padded(rows, pad, width)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first real error of a failed TaskGroup (the others were cancelled because of it)."""
    for exc in group.exceptions:
        return _first_leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
    return group
