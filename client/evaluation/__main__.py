"""``python -m client.evaluation DATA [--targets ...]`` (``make eval DATA=... TARGETS=...``): the model
card's MRR / MAP / nDCG@10 table for one or more targets, printed and written as JSON and markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.evaluation.dataset import DatasetError, load_dataset
from client.evaluation.harness import EvaluationError, evaluate_targets
from client.evaluation.metrics import DEFAULT_K
from client.evaluation.rankers import DEFAULT_GATEWAY, Truncation, parse_targets
from client.evaluation.report import markdown_table, summary_line, write_reports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client.evaluation",
        description="Rank labelled (query, document, label) rows through reranker targets; report MRR, MAP, nDCG@k.",
    )
    parser.add_argument("data", type=Path, help="JSONL, CSV or TSV with query, document and label columns")
    parser.add_argument(
        "--targets",
        default=DEFAULT_GATEWAY,
        help="comma-separated [name=]host:port (a gateway) or [name=]local:<model dir> (in-process reference); "
        f"default {DEFAULT_GATEWAY}",
    )
    parser.add_argument("--format", choices=("jsonl", "csv", "tsv"), help="data format (default: from the extension)")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="cut-off of nDCG (default 10)")
    parser.add_argument(
        "--no-relevant",
        choices=("skip", "zero"),
        default="skip",
        help="queries with no relevant passage: left out of the means (skip, default) "
        "or counted as 0 (zero, as trec_eval)",
    )
    parser.add_argument(
        "--truncation",
        choices=("end", "none", "split"),
        default="end",
        help="what gateways do with passages longer than the model's input: cut the end (default), refuse, "
        "or split: score every window and rank by the best (compare runs to measure its effect)",
    )
    parser.add_argument("--window-tokens", type=int, help="with --truncation split: tokens of each (query, window) pair")
    parser.add_argument("--window-overlap-tokens", type=int, help="with --truncation split: tokens a window repeats")
    parser.add_argument("--max-windows", type=int, help="with --truncation split: windows scored per passage")
    parser.add_argument("--concurrency", type=int, default=4, help="queries in flight per gateway (default 4)")
    parser.add_argument("--output-dir", type=Path, default=Path("logs/eval"), help="where <data name>.json/.md go")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; exit 0 on success, 2 on bad input, 1 when a target fails."""
    args = build_parser().parse_args(argv)
    if args.k < 1 or args.concurrency < 1:
        print("error: --k and --concurrency must be at least 1", file=sys.stderr)
        return 2
    if args.truncation != "split" and any(v is not None for v in (args.window_tokens, args.window_overlap_tokens, args.max_windows)):
        print("error: --window-tokens, --window-overlap-tokens and --max-windows need --truncation split", file=sys.stderr)
        return 2
    try:
        targets = parse_targets(args.targets)
        groups = load_dataset(args.data, args.format)
    except (ValueError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        reports = evaluate_targets(
            groups,
            targets,
            k=args.k,
            skip_no_relevant=args.no_relevant == "skip",
            concurrency=args.concurrency,
            progress=not args.no_progress,
            truncation=Truncation(args.truncation, args.window_tokens, args.window_overlap_tokens, args.max_windows),
        )
    except (EvaluationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown_table(reports))
    print()
    print(summary_line(groups, reports))
    json_path, md_path = write_reports(args.output_dir, args.data.stem, str(args.data), groups, reports)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
