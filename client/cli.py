"""Command-line reranking: ``reranker QUERY DOC [DOC ...]`` or ``reranker QUERY --file docs.txt``.

Prints the ranking best first (rank, index, score, document); ``--json`` prints it as JSON.
Exit status 1 with the gRPC status and message when the call fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from client.reranker_client import RerankerClient, RerankerError


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
    parser.add_argument("query")
    parser.add_argument("documents", nargs="*", help="documents (or use --file)")
    parser.add_argument("--file", type=Path, help="documents: one per line (.txt), a JSON list (.json) or JSONL (.jsonl)")
    parser.add_argument("--target", default=os.environ.get("RERANKER_TARGET", "localhost:50051"), help="gateway host:port")
    parser.add_argument("--model", default=None, help="a served model's name or hub id (default: the server's default)")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--raw-scores", action="store_true", help="logits instead of sigmoid scores")
    parser.add_argument("--no-truncate", action="store_true", help="refuse too-long pairs instead of truncating")
    parser.add_argument("--api-key", default=os.environ.get("RERANKER_API_KEY"))
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca)")
    parser.add_argument("--ca", type=Path, help="PEM root certificate(s) for TLS")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    documents = list(args.documents) + (read_documents(args.file) if args.file else [])
    if not documents:
        parser.error("no documents: give them as arguments or with --file")
    try:
        with RerankerClient(args.target, api_key=args.api_key, timeout=args.timeout, tls=args.tls, root_certificates=args.ca) as client:
            results = client.rerank(args.query, documents, top_k=args.top_k, return_documents=True,
                                    raw_scores=args.raw_scores, truncate=not args.no_truncate, model=args.model)
    except RerankerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"index": r.index, "score": r.score, "logit": r.logit, "document": r.document} for r in results],
                         ensure_ascii=False, indent=2))
        return 0
    for rank, r in enumerate(results, 1):
        print(f"{rank:>3}  [{r.index}]  {r.score:.4f}  {r.document}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
