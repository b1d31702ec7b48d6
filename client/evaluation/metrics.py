"""MRR, MAP and nDCG@k of one ranked query, and their means over queries.

Every function takes the labels of a query's passages *in ranked order* (best first), so ties in score
have already been broken by whoever ranked them (see ``rank_by_scores``). Conventions, which equal
trec_eval's (and so ir-measures' ``RR``, ``AP`` and ``nDCG@k``) for non-negative integer labels:

- a passage is relevant when its label is > 0 (binary and graded labels alike);
- gain is the label itself (linear), discount is ``log2(rank + 1)`` with ranks from 1;
- the ideal ranking for nDCG sorts all of the query's labels, so it counts every relevant passage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_K = 10


@dataclass(frozen=True)
class QueryMetrics:
    """The metrics of one ranked query."""

    reciprocal_rank: float
    average_precision: float
    ndcg: float


@dataclass(frozen=True)
class MeanMetrics:
    """Means over the evaluated queries (``queries``); ``skipped`` had no relevant passage."""

    mrr: float
    map: float
    ndcg: float
    queries: int
    skipped: int


def rank_by_scores(scores: Sequence[float]) -> list[int]:
    """Indices best first: higher score first, equal scores keep the lower index first.

    Given the model's logits (what the rankers return), this is the order the gateway returns
    (RerankResponse.results), so evaluating it is evaluating the returned ranking itself."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def has_relevant(labels: Iterable[float]) -> bool:
    """Whether any passage is relevant (label > 0)."""
    return any(label > 0 for label in labels)


def reciprocal_rank(ranked_labels: Sequence[float]) -> float:
    """1 / rank of the first relevant passage; 0 when none is relevant."""
    for rank, label in enumerate(ranked_labels, start=1):
        if label > 0:
            return 1.0 / rank
    return 0.0


def average_precision(ranked_labels: Sequence[float]) -> float:
    """Mean of precision@rank over the ranks of the relevant passages; 0 when none is relevant.

    Not cut off at k: the whole group is ranked, so every relevant passage has a rank."""
    hits = 0
    precision_sum = 0.0
    for rank, label in enumerate(ranked_labels, start=1):
        if label > 0:
            hits += 1
            precision_sum += hits / rank
    return precision_sum / hits if hits else 0.0


def dcg_at_k(ranked_labels: Sequence[float], k: int) -> float:
    """Sum of label / log2(rank + 1) over the first k ranks (negative labels count as 0)."""
    return sum(max(label, 0.0) / math.log2(rank + 1) for rank, label in enumerate(ranked_labels[:k], start=1))


def ndcg_at_k(ranked_labels: Sequence[float], k: int = DEFAULT_K) -> float:
    """DCG@k / ideal DCG@k; 0 when no passage is relevant (the ideal DCG is 0)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ideal = dcg_at_k(sorted(ranked_labels, reverse=True), k)
    return dcg_at_k(ranked_labels, k) / ideal if ideal > 0 else 0.0


def query_metrics(ranked_labels: Sequence[float], k: int = DEFAULT_K) -> QueryMetrics:
    """RR, AP and nDCG@k of one query's labels in ranked order."""
    return QueryMetrics(reciprocal_rank(ranked_labels), average_precision(ranked_labels), ndcg_at_k(ranked_labels, k))


def mean_metrics(per_query: Sequence[tuple[Sequence[float], QueryMetrics]], *, skip_no_relevant: bool) -> MeanMetrics:
    """Mean RR, AP and nDCG over queries, given each query's labels and its metrics.

    A query with no relevant passage scores 0 on every metric whatever the ranking; with
    ``skip_no_relevant`` it is left out of the means (and counted in ``skipped``), otherwise it counts
    as 0, as trec_eval does. Means over no query are 0."""
    kept = [m for labels, m in per_query if not skip_no_relevant or has_relevant(labels)]
    count = len(kept)

    def mean(values: Iterable[float]) -> float:
        return math.fsum(values) / count if count else 0.0

    return MeanMetrics(
        mrr=mean(m.reciprocal_rank for m in kept),
        map=mean(m.average_precision for m in kept),
        ndcg=mean(m.ndcg for m in kept),
        queries=count,
        skipped=len(per_query) - count,
    )
