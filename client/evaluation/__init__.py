"""Evaluate rerankers the way ARA-Reranker-V1's model card does: MRR, MAP and nDCG@10 over labelled
(query, passage, label) rows grouped by query, ranked through the service or in-process.

    from client.evaluation import load_dataset, parse_targets, evaluate_targets, markdown_table
    groups = load_dataset("client/data/arabic_sample.jsonl")
    reports = evaluate_targets(groups, parse_targets("127.0.0.1:50051,ref=local:models/tiny"))
    print(markdown_table(reports))
"""

from pathlib import Path

from client.evaluation.dataset import DatasetError, QueryGroup, load_dataset
from client.evaluation.harness import EvaluationError, ModelReport, QueryResult, evaluate, evaluate_targets, rank_group
from client.evaluation.metrics import (
    MeanMetrics,
    QueryMetrics,
    average_precision,
    mean_metrics,
    ndcg_at_k,
    query_metrics,
    rank_by_scores,
    reciprocal_rank,
)
from client.evaluation.rankers import (
    LocalQwen3Ranker,
    LocalRanker,
    Ranker,
    ServiceRanker,
    Target,
    Truncation,
    local_ranker,
    open_ranker,
    open_rankers,
    parse_targets,
)
from client.evaluation.report import markdown_table, to_json, write_reports

# The 20-query Arabic sample written for this project (graded labels 0-2).
SAMPLE_DATA = Path(__file__).resolve().parent.parent / "data" / "arabic_sample.jsonl"

__all__ = [
    "SAMPLE_DATA",
    "DatasetError",
    "EvaluationError",
    "LocalQwen3Ranker",
    "LocalRanker",
    "MeanMetrics",
    "ModelReport",
    "QueryGroup",
    "QueryMetrics",
    "QueryResult",
    "Ranker",
    "ServiceRanker",
    "Target",
    "Truncation",
    "average_precision",
    "evaluate",
    "evaluate_targets",
    "load_dataset",
    "markdown_table",
    "mean_metrics",
    "ndcg_at_k",
    "open_ranker",
    "local_ranker",
    "open_rankers",
    "parse_targets",
    "query_metrics",
    "rank_by_scores",
    "rank_group",
    "reciprocal_rank",
    "to_json",
    "write_reports",
]
