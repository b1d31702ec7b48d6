"""How long one largest request holds the gateway's event loop before any tokenizing: ``python -m bench.big_message``.

A request at the gateway's default ``max_message_bytes`` (32 MiB; the default ``max_documents``, each document cut to
fit) is read the way each API reads it: reranker.v1's protobuf parsed and its documents turned into Python strings
(job_of, validation), Cohere's JSON body parsed and validated by its pydantic model. Both run under CPython's GIL
in C (json, upb, pydantic-core) without releasing it, so a thread would not free the event loop meanwhile: every other
call on that gateway waits this long. Tokenizing, the costly part, already runs off the event loop slice by slice
(reranking.py). Timed in this process, the median of ``--repeat`` tries.

Writes ``bench/results/big-message-<timestamp>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ara_reranker_client.v1 import reranker_pb2
from ara_reranker_server.api.cohere import CohereV2Request
from ara_reranker_server.api.reranker_grpc import job_of
from ara_reranker_server.models import limits_of
from ara_reranker_server.settings import Settings
from ara_reranker_server.validation import validate
from bench.run import machine_info, write_result
from tools.arabic_text import QUERIES, SENTENCES


def timed(fn, repeat: int) -> float:
    """Median milliseconds of ``fn()``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only (tests)")
    args = parser.parse_args(argv)

    settings = Settings()
    documents = settings.max_documents
    # Arabic text is 2 bytes a character in UTF-8: fill the message to its bound.
    chars = min(settings.max_document_chars, settings.max_message_bytes // (2 * documents) - 16)
    text = " ".join(SENTENCES)
    document = (text * (chars // len(text) + 1))[:chars]
    query = QUERIES[0]
    message = reranker_pb2.RerankRequest(query=query, documents=[document] * documents).SerializeToString()
    body = json.dumps({"model": "ara", "query": query, "documents": [document] * documents}, ensure_ascii=False).encode()
    limits = limits_of(settings)

    def grpc_read() -> None:
        validate(job_of(reranker_pb2.RerankRequest.FromString(message)), limits)

    def http_read() -> None:
        CohereV2Request.model_validate(json.loads(body))

    result = {
        "documents": documents, "document_chars": chars,
        "bytes": {"reranker.v1 (protobuf)": len(message), "Cohere v2 (JSON)": len(body)},
        "event_loop_held_ms": {"reranker.v1: parse, documents to strings, validate": round(timed(grpc_read, args.repeat), 1),
                               "Cohere v2: json.loads, pydantic validation": round(timed(http_read, args.repeat), 1)},
        "meta": {"command": " ".join(["python -m bench.big_message", *(argv if argv is not None else sys.argv[1:])]),
                 **machine_info()},
    }
    print(markdown(result), flush=True)
    if not args.no_write:
        write_result("big-message", result)
    return 0


def markdown(result: dict) -> str:
    rows = [f"A request of {result['documents']:,} documents of {result['document_chars']:,} Arabic characters:", "",
            "| what the gateway does with it | message MB | event loop held, ms (median) |", "|---|---:|---:|"]
    for size, (what, ms) in zip(result["bytes"].values(), result["event_loop_held_ms"].items()):
        rows.append(f"| {what} | {size / 1e6:.1f} | {ms:.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
