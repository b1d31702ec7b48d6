"""The results as the model card's table (markdown) and as JSON, and writing both to disk."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.evaluation.dataset import QueryGroup
from client.evaluation.harness import ModelReport


def markdown_table(reports: Sequence[ModelReport], digits: int = 4) -> str:
    """``| model | MRR | MAP | nDCG@10 |`` with one row per target, as in the model card."""
    k = reports[0].k if reports else 10
    lines = [f"| model | MRR | MAP | nDCG@{k} |", "|---|---|---|---|"]
    for r in reports:
        m = r.means
        lines.append(f"| {r.name} | {m.mrr:.{digits}f} | {m.map:.{digits}f} | {m.ndcg:.{digits}f} |")
    return "\n".join(lines)


def dataset_summary(groups: Sequence[QueryGroup]) -> dict[str, Any]:
    """Rows, queries, queries without a relevant passage, and whether labels are binary or graded."""
    labels = {label for g in groups for label in g.labels}
    return {
        "rows": sum(len(g.documents) for g in groups),
        "queries": len(groups),
        "queries_without_relevant": sum(1 for g in groups if not any(label > 0 for label in g.labels)),
        "labels": "binary" if labels <= {0.0, 1.0} else "graded",
    }


def summary_line(groups: Sequence[QueryGroup], reports: Sequence[ModelReport]) -> str:
    """One sentence under the table saying what the means cover."""
    info = dataset_summary(groups)
    evaluated = reports[0].means.queries if reports else info["queries"]
    skipped = reports[0].means.skipped if reports else 0
    note = f", {skipped} without a relevant passage left out" if skipped else ""
    return f"{info['rows']} rows, {info['queries']} queries ({evaluated} evaluated{note}), {info['labels']} labels."


def to_json(source: str, groups: Sequence[QueryGroup], reports: Sequence[ModelReport]) -> dict[str, Any]:
    """Everything needed to audit the table: dataset, settings, means, and each query's ranking."""
    return {
        "dataset": {"path": source, **dataset_summary(groups)},
        "k": reports[0].k if reports else None,
        "models": [
            {
                "name": r.name,
                "target": r.target,
                "mrr": r.means.mrr,
                "map": r.means.map,
                f"ndcg@{r.k}": r.means.ndcg,
                "queries_evaluated": r.means.queries,
                "queries_skipped": r.means.skipped,
                "seconds": round(r.seconds, 3),
                "per_query": [
                    {
                        "line": q.line,
                        "query": q.query,
                        "ranking": list(q.ranking),
                        "scores": list(q.scores),
                        "rr": q.metrics.reciprocal_rank,
                        "ap": q.metrics.average_precision,
                        f"ndcg@{r.k}": q.metrics.ndcg,
                    }
                    for q in r.queries
                ],
            }
            for r in reports
        ],
    }


def write_reports(
    out_dir: Path | str, stem: str, source: str, groups: Sequence[QueryGroup], reports: Sequence[ModelReport]
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    document = json.dumps(to_json(source, groups, reports), ensure_ascii=False, indent=2)
    json_path.write_text(document + "\n", encoding="utf-8")
    md_path.write_text(f"{markdown_table(reports)}\n\n{summary_line(groups, reports)}\n", encoding="utf-8")
    return json_path, md_path
