"""The evaluation's MRR, MAP and nDCG@k equal trec_eval's (through ir-measures / pytrec_eval) to 1e-9,
ties are broken as the gateway breaks them, and the harness averages what users expect."""

from __future__ import annotations

import math

import ir_measures
import numpy as np
import pytest
from ir_measures import AP, RR, nDCG

from client.evaluation import (
    EvaluationError,
    QueryGroup,
    evaluate,
    markdown_table,
    mean_metrics,
    query_metrics,
    rank_by_scores,
)

pytestmark = pytest.mark.unit  # starts no process: make test-unit

TOLERANCE = 1e-9


def random_queries(rng: np.random.Generator, count: int, graded: bool) -> list[tuple[list[int], list[int]]]:
    """(labels by document, a random ranking) per query; some queries have no relevant document."""
    queries = []
    for _ in range(count):
        n = int(rng.integers(1, 31))
        labels = rng.integers(0, 4 if graded else 2, size=n)
        if rng.random() < 0.15:
            labels[:] = 0
        queries.append(([int(x) for x in labels], [int(i) for i in rng.permutation(n)]))
    return queries


def trec_eval_per_query(queries, measures) -> dict[str, dict[str, float]]:
    """ir-measures through pytrec_eval; run scores strictly decrease with rank so trec_eval keeps our order."""
    qrels = [
        ir_measures.Qrel(f"q{q}", f"d{d}", label)
        for q, (labels, _) in enumerate(queries)
        for d, label in enumerate(labels)
    ]
    run = [
        ir_measures.ScoredDoc(f"q{q}", f"d{d}", float(len(ranking) - rank))
        for q, (_, ranking) in enumerate(queries)
        for rank, d in enumerate(ranking)
    ]
    out: dict[str, dict[str, float]] = {}
    for metric in ir_measures.pytrec_eval.iter_calc(measures, qrels, run):
        out.setdefault(metric.query_id, {})[str(metric.measure)] = metric.value
    return out


@pytest.mark.parametrize("graded", [False, True], ids=["binary", "graded"])
@pytest.mark.parametrize("k", [1, 3, 10, 20])
def test_per_query_metrics_equal_trec_eval(graded, k):
    queries = random_queries(np.random.default_rng(k), 200, graded)
    expected = trec_eval_per_query(queries, [RR, AP, nDCG @ k])
    for q, (labels, ranking) in enumerate(queries):
        ours = query_metrics([labels[i] for i in ranking], k)
        theirs = expected[f"q{q}"]
        assert ours.reciprocal_rank == pytest.approx(theirs["RR"], abs=TOLERANCE)
        assert ours.average_precision == pytest.approx(theirs["AP"], abs=TOLERANCE)
        assert ours.ndcg == pytest.approx(theirs[f"nDCG@{k}"], abs=TOLERANCE)


@pytest.mark.parametrize("graded", [False, True], ids=["binary", "graded"])
def test_means_equal_trec_eval(graded):
    queries = random_queries(np.random.default_rng(7), 300, graded)
    per_query = [(labels, query_metrics([labels[i] for i in ranking])) for labels, ranking in queries]
    expected = trec_eval_per_query(queries, [RR, AP, nDCG @ 10])

    def trec_mean(measure: str, keep) -> float:
        values = [expected[f"q{q}"][measure] for q, (labels, _) in enumerate(queries) if keep(labels)]
        return math.fsum(values) / len(values)

    # "zero": queries without a relevant document count as 0, as in trec_eval's own mean.
    zero = mean_metrics(per_query, skip_no_relevant=False)
    assert zero.skipped == 0 and zero.queries == 300
    assert zero.mrr == pytest.approx(trec_mean("RR", lambda _: True), abs=TOLERANCE)
    assert zero.map == pytest.approx(trec_mean("AP", lambda _: True), abs=TOLERANCE)
    assert zero.ndcg == pytest.approx(trec_mean("nDCG@10", lambda _: True), abs=TOLERANCE)

    # "skip" (the default): they are left out of the means.
    skip = mean_metrics(per_query, skip_no_relevant=True)
    with_relevant = lambda labels: any(labels)  # noqa: E731
    assert skip.skipped == sum(1 for labels, _ in queries if not any(labels)) > 0
    assert skip.queries + skip.skipped == 300
    assert skip.mrr == pytest.approx(trec_mean("RR", with_relevant), abs=TOLERANCE)
    assert skip.map == pytest.approx(trec_mean("AP", with_relevant), abs=TOLERANCE)
    assert skip.ndcg == pytest.approx(trec_mean("nDCG@10", with_relevant), abs=TOLERANCE)


def test_worked_example_from_the_evaluation_docs():
    # Ranked labels 0, 2, 0, 1: first relevant at rank 2; relevant at ranks 2 and 4.
    m = query_metrics([0, 2, 0, 1])
    assert m.reciprocal_rank == 0.5
    assert m.average_precision == pytest.approx((1 / 2 + 2 / 4) / 2)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert m.ndcg == pytest.approx(dcg / ideal)


def test_no_relevant_passage_scores_zero():
    m = query_metrics([0, 0, 0])
    assert (m.reciprocal_rank, m.average_precision, m.ndcg) == (0.0, 0.0, 0.0)


def test_ties_keep_the_lower_index_first_like_the_gateway():
    assert rank_by_scores([0.5, 0.9, 0.5, 0.9, 0.1]) == [1, 3, 0, 2, 4]


def test_ndcg_counts_relevant_passages_beyond_k_in_the_ideal_only_up_to_k():
    # 12 relevant passages, all ranked: nDCG@10 is 1 whatever their order among themselves.
    assert query_metrics([1] * 12 + [0] * 3, k=10).ndcg == pytest.approx(1.0)
    # The only relevant passage at rank 11 is beyond the cut-off.
    assert query_metrics([0] * 10 + [1], k=10).ndcg == 0.0


def label_ranker(query: str, documents) -> list[float]:
    """A perfect ranker for the groups below: the score is written in the document."""
    return [float(d.split(":")[1]) for d in documents]


def groups() -> list[QueryGroup]:
    return [
        QueryGroup("q1", ("a:0.1", "b:0.9", "c:0.5"), (0.0, 1.0, 0.0), 1),
        QueryGroup("q2", ("a:0.7", "b:0.7", "c:0.2"), (0.0, 2.0, 1.0), 4),  # a tie: a (index 0) ranks first
        QueryGroup("q3", ("a:0.3", "b:0.6"), (0.0, 0.0), 7),  # no relevant passage
    ]


def test_harness_ranks_by_score_with_ties_by_index_and_skips_queries_without_relevant():
    report = evaluate(groups(), label_ranker, name="fake", progress=False)
    assert [q.ranking for q in report.queries] == [(1, 2, 0), (0, 1, 2), (1, 0)]
    assert report.means.queries == 2 and report.means.skipped == 1
    assert report.means.mrr == pytest.approx((1.0 + 0.5) / 2)
    assert report.means.map == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2) / 2)
    zero = evaluate(groups(), label_ranker, name="fake", skip_no_relevant=False, concurrency=3, progress=False)
    assert zero.means.mrr == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_harness_names_the_query_and_line_of_a_failure():
    def broken(query, documents):
        if query == "q2":
            raise RuntimeError("UNAVAILABLE: no Triton endpoint")
        return label_ranker(query, documents)

    with pytest.raises(EvaluationError, match=r"line 4 \('q2'\).*UNAVAILABLE"):
        evaluate(groups(), broken, name="svc", progress=False)


def test_table_has_the_model_card_columns():
    report = evaluate(groups(), label_ranker, name="fake-model", progress=False)
    lines = markdown_table([report]).splitlines()
    assert lines[0] == "| model | MRR | MAP | nDCG@10 |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2].startswith("| fake-model | 0.7500 | ")
