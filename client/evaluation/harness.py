"""Rank every query group with each target and compute its MRR, MAP and nDCG@k."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from client.evaluation.dataset import QueryGroup
from client.evaluation.metrics import DEFAULT_K, MeanMetrics, QueryMetrics, mean_metrics, query_metrics, rank_by_scores
from client.evaluation.rankers import Ranker, Target, Truncation, open_rankers


class EvaluationError(RuntimeError):
    """A target failed to rank a query; the message names the target, the query and its data line."""


@dataclass(frozen=True)
class QueryResult:
    """One query as ranked by one target: ``ranking`` holds document indices best first."""

    query: str
    line: int
    ranking: tuple[int, ...]
    scores: tuple[float, ...]
    labels: tuple[float, ...]
    metrics: QueryMetrics


@dataclass(frozen=True)
class ModelReport:
    """A target's results: the means over queries and every query's own ranking and metrics."""

    name: str
    target: str
    k: int
    means: MeanMetrics
    queries: tuple[QueryResult, ...]
    seconds: float


def rank_group(group: QueryGroup, ranker: Ranker, k: int = DEFAULT_K) -> QueryResult:
    """Score one group, rank it (logit descending, ties by lower index, as the gateway) and measure it."""
    scores = [float(s) for s in ranker(group.query, group.documents)]
    if len(scores) != len(group.documents):
        raise ValueError(f"got {len(scores)} scores for {len(group.documents)} documents")
    ranking = rank_by_scores(scores)
    ranked_labels = [group.labels[i] for i in ranking]
    metrics = query_metrics(ranked_labels, k)
    return QueryResult(group.query, group.line, tuple(ranking), tuple(scores), group.labels, metrics)


def evaluate(
    groups: Sequence[QueryGroup],
    ranker: Ranker,
    *,
    name: str,
    target: str = "",
    k: int = DEFAULT_K,
    skip_no_relevant: bool = True,
    concurrency: int = 1,
    progress: bool = True,
) -> ModelReport:
    """Rank every group with ``ranker`` (``concurrency`` groups in flight) and average the metrics.

    Queries with no relevant passage are left out of the means with ``skip_no_relevant`` (counted in
    ``means.skipped``), else they count as 0."""
    concurrency = max(1, min(concurrency, getattr(ranker, "max_concurrency", concurrency)))

    def run(group: QueryGroup) -> QueryResult:
        try:
            return rank_group(group, ranker, k)
        except Exception as exc:  # any transport or model failure: say which query, where in the data
            where = f"the query on line {group.line} ({group.query[:40]!r})"
            raise EvaluationError(f"{name}: ranking {where} failed: {exc}") from exc

    started = time.perf_counter()
    bar = tqdm(total=len(groups), desc=name, unit="query", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    results = []
    try:
        with bar:
            for result in pool.map(run, groups):  # map keeps the data order
                results.append(result)
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a failure, do not rank the queries still queued
    seconds = time.perf_counter() - started
    means = mean_metrics([(r.labels, r.metrics) for r in results], skip_no_relevant=skip_no_relevant)
    return ModelReport(name, target, k, means, tuple(results), seconds)


def evaluate_targets(groups: Sequence[QueryGroup], targets: Sequence[Target], truncation: Truncation | None = None,
                     **options) -> list[ModelReport]:
    """Evaluate each target in turn, every model a gateway serves as its own row (options as for
    ``evaluate``; ``truncation``: what gateways do with long passages); names are made unique for the table."""
    reports: list[ModelReport] = []
    for target in targets:
        with contextlib.ExitStack() as stack:
            try:
                rankers = stack.enter_context(open_rankers(target, truncation))
            except Exception as exc:  # unreachable gateway, missing model dir, unknown model, ...
                raise EvaluationError(f"cannot open target {target.spec!r}: {exc}") from exc
            for name, ranker in rankers:
                if any(r.name == name for r in reports):
                    name = f"{name} ({target.spec})"  # two gateways serving the same model id
                spec = target.spec if len(rankers) == 1 else f"{target.location}/{getattr(ranker, 'model', '')}"
                reports.append(evaluate(groups, ranker, name=name, target=spec, **options))
    return reports
