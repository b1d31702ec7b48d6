"""How long one largest request holds the gateway's event loop: ``python -m bench.big_message``.

A request at the gateway's default ``max_message_bytes`` (32 MiB; the default ``max_documents``, each document cut to
fit) is read the way each API reads it, and its answer with every document echoed written: reranker.v1's protobuf
parsed, its documents turned into Python strings and validated; Cohere's JSON body parsed and validated by its pydantic
model. This runs in C under CPython's GIL (upb, json, pydantic-core), so a thread would not free the event loop.
Measured two ways in one run, the median of ``--repeat`` tries each:
- in one go (as the gateway reads a message up to large_messages.INLINE_BYTES): the whole time, all of it a hold;
- a slice at a time (as it reads a larger one: server/ara_reranker_server/api/large_messages.py): the longest hold,
  i.e. the longest gap between two turns of a task that only waits its turn, and the whole time.
Tokenizing, the costly part, runs off the event loop slice by slice either way (reranking.py).

Writes ``bench/results/big-message-<timestamp>.json`` and prints a table.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from ara_reranker_client.v1 import reranker_pb2
from ara_reranker_server.api.cohere import CohereV2Request
from ara_reranker_server.api.large_messages import (
    SLICE_BYTES,
    json_chunks,
    loads_object,
    parse_proto,
    serialize_proto,
    strings,
)
from ara_reranker_server.api.reranker_grpc import job_of
from ara_reranker_server.core_types import Limits
from ara_reranker_server.settings import Settings
from ara_reranker_server.validation import validate
from bench import results
from tools.arabic_text import QUERIES, SENTENCES


def timed(fn, repeat: int) -> float:
    """Median milliseconds of ``fn()``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def sliced(make_coroutine, repeat: int) -> tuple[float, float]:
    """Median milliseconds of the longest hold of the event loop while ``make_coroutine()`` runs, and of its whole time."""

    async def once() -> tuple[float, float]:
        done, longest = False, 0.0

        async def ticker() -> None:
            nonlocal longest
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                now = time.perf_counter()
                longest, last = max(longest, now - last), now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = time.perf_counter()
        await make_coroutine()
        whole = time.perf_counter() - started
        done = True
        await task
        return longest * 1000, whole * 1000

    runs = [asyncio.run(once()) for _ in range(repeat)]
    return float(np.median([r[0] for r in runs])), float(np.median([r[1] for r in runs]))


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    settings = Settings()
    documents = settings.max_documents
    # Arabic text is 2 bytes a character in UTF-8: fill the message to its bound.
    chars = min(settings.max_document_chars, settings.max_message_bytes // (2 * documents) - 16)
    text = " ".join(SENTENCES)
    texts = [(f"{i} " + text * (chars // len(text) + 1))[:chars] for i in range(documents)]  # distinct strings, as sent
    query = QUERIES[0]
    message = reranker_pb2.RerankRequest(query=query, documents=texts, return_documents=True).SerializeToString()
    body = json.dumps({"model": "ara", "query": query, "documents": texts, "return_documents": True},
                      ensure_ascii=False).encode()
    limits = Limits.of(settings)
    ranked = [reranker_pb2.RankedDocument(index=i, score=0.5, logit=0.0, document=t) for i, t in enumerate(texts)]
    answer = {"id": "x", "results": [{"index": i, "relevance_score": 0.5, "document": {"text": t}} for i, t in enumerate(texts)],
              "meta": {"billed_units": {"search_units": 1}}}

    def dumps(payload) -> str:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    def grpc_read() -> None:
        validate(job_of(reranker_pb2.RerankRequest.FromString(message)), limits)

    async def grpc_read_sliced() -> None:
        request = await parse_proto(reranker_pb2.RerankRequest, message)
        validate(job_of(request, await strings(request.documents, len(message))), limits)

    def http_read() -> None:
        CohereV2Request.model_validate(json.loads(body))

    async def http_read_sliced() -> None:
        CohereV2Request.model_validate(await loads_object(body))

    def grpc_write() -> None:
        reranker_pb2.RerankResponse(results=ranked, model_id="ara").SerializeToString()

    def http_write() -> None:
        dumps(answer).encode()

    cases = {
        "reranker.v1 request: parse, documents to strings, validate": (grpc_read, grpc_read_sliced),
        "reranker.v1 answer, documents echoed: serialize": (
            grpc_write, lambda: serialize_proto(reranker_pb2.RerankResponse(model_id="ara"), "results", ranked, large=True)),
        "Cohere v2 request: JSON, pydantic validation": (http_read, http_read_sliced),
        "Cohere v2 answer, documents echoed: JSON": (http_write, lambda: json_chunks(answer, dumps)),
    }
    held = {}
    for what, (one_go, in_slices) in cases.items():
        longest, whole = sliced(in_slices, args.repeat)
        held[what] = {"one_go_ms": round(timed(one_go, args.repeat), 1), "sliced_longest_hold_ms": round(longest, 2),
                      "sliced_whole_ms": round(whole, 1)}
    result = {
        "documents": documents, "document_chars": chars,
        "bytes": {"reranker.v1 (protobuf)": len(message), "Cohere v2 (JSON)": len(body)},
        "slice_bytes": SLICE_BYTES, "event_loop_held": held,
    }
    results.finish("big-message", "bench.big_message", argv, args, result, markdown)
    return 0


def markdown(result: dict) -> str:
    rows = [f"A request of {result['documents']:,} documents of {result['document_chars']:,} Arabic characters "
            f"({result['bytes']['reranker.v1 (protobuf)'] / 1e6:.1f} MB protobuf, {result['bytes']['Cohere v2 (JSON)'] / 1e6:.1f} MB JSON), "
            f"slices of {result['slice_bytes'] / 2**20:g} MiB; milliseconds, medians:", "",
            "| what the gateway does | in one go: loop held | in slices: longest hold | in slices: whole |", "|---|---:|---:|---:|"]
    for what, ms in result["event_loop_held"].items():
        rows.append(f"| {what} | {ms['one_go_ms']:.1f} | {ms['sliced_longest_hold_ms']:.1f} | {ms['sliced_whole_ms']:.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
