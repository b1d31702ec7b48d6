"""Command-line reranking: ``reranker QUERY DOC [DOC ...]`` or ``reranker QUERY --file docs.txt``.

Prints the ranking best first (rank, index, score, document); ``--json`` prints it as JSON. ``--split``
scores long documents window by window and also prints each one's best window.
Exit status 1 with the gRPC status and message when the call fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ara_reranker_client import __version__
from ara_reranker_client.reranker_client import RerankerClient, RerankerError


def read_documents(path: Path) -> list[str]:
    """One document per line of a text file, or a JSON list, or JSONL with a "document"/"text" field."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [str(d) for d in json.loads(text)]
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [row.get("document", row.get("text", "")) if isinstance(row, dict) else str(row) for row in rows]
    return [line for line in text.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reranker", description="Rank documents for a query with the reranker service.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("query")
    parser.add_argument("documents", nargs="*", help="documents (or use --file)")
    parser.add_argument("--file", type=Path, help="documents: one per line (.txt), a JSON list (.json) or JSONL (.jsonl)")
    parser.add_argument("--target", default=os.environ.get("RERANKER_TARGET", "localhost:50051"), help="gateway host:port")
    parser.add_argument("--model", default=None, help="a served model's name or hub id (default: the server's default)")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--priority", choices=["interactive", "batch"], default="interactive",
                        help="batch: work that may wait for interactive calls (never starved)")
    parser.add_argument("--instruction", default=None,
                        help="an LLM reranker's task instruction (Qwen3-Reranker; default: the model's); cross-encoders refuse one")
    parser.add_argument("--raw-scores", action="store_true", help="logits instead of sigmoid scores")
    parser.add_argument("--no-truncate", action="store_true", help="refuse too-long pairs instead of truncating")
    parser.add_argument("--split", action="store_true",
                        help="score every window of a long document, rank it by its best one and show that window")
    parser.add_argument("--window-tokens", type=int, help="with --split: tokens of each (query, window) pair")
    parser.add_argument("--window-overlap-tokens", type=int, help="with --split: tokens a window repeats from the previous one")
    parser.add_argument("--max-windows", type=int, help="with --split: windows scored per document")
    parser.add_argument("--api-key", default=os.environ.get("RERANKER_API_KEY"))
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca)")
    parser.add_argument("--ca", type=Path, help="PEM root certificate(s) for TLS")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    documents = list(args.documents) + (read_documents(args.file) if args.file else [])
    if not documents:
        parser.error("no documents: give them as arguments or with --file")
    if args.split and args.no_truncate:
        parser.error("--split and --no-truncate exclude each other")
    windows = {"window_tokens": args.window_tokens, "window_overlap_tokens": args.window_overlap_tokens, "max_windows": args.max_windows}
    if not args.split and any(v is not None for v in windows.values()):
        parser.error("--window-tokens, --window-overlap-tokens and --max-windows need --split")
    try:
        with RerankerClient(args.target, api_key=args.api_key, timeout=args.timeout, tls=args.tls, root_certificates=args.ca) as client:
            results = client.rerank(args.query, documents, top_k=args.top_k, return_documents=True,
                                    raw_scores=args.raw_scores, truncate=not args.no_truncate, model=args.model,
                                    split=args.split, priority=args.priority, instruction=args.instruction,
                                    **windows)
    except RerankerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([_as_json(r) for r in results], ensure_ascii=False, indent=2))
        return 0
    for rank, r in enumerate(results, 1):
        print(f"{rank:>3}  [{r.index}]  {r.score:.4f}  {r.document}")
        if r.best_window is not None:
            w = r.best_window
            print(f"     best window {w.index} (characters {w.start_char}-{w.end_char}): {r.document[w.start_char:w.end_char]}")
    return 0


def _as_json(r) -> dict:
    row = {"index": r.index, "score": r.score, "logit": r.logit, "document": r.document}
    if r.best_window is not None:
        w = r.best_window
        row["best_window"] = {"index": w.index, "start_char": w.start_char, "end_char": w.end_char,
                              "text": r.document[w.start_char : w.end_char]}
    return row


if __name__ == "__main__":
    sys.exit(main())
