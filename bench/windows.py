"""Long documents, cut at their end or scored window by window: ``python -m bench.windows`` (~3 minutes).

A retrieval workload of whole pages: each request has one query and ``--documents`` Arabic pages of
2,000-20,000 characters (about 450-4,500 tokens). A real Triton + gateway (offline model, default
``tiny``, scoring at ``--max-input-length`` 512 as most deployments do) serves it for ``--seconds`` with
TRUNCATION_END and again with TRUNCATION_SPLIT (the default windows: the max input length, 128 tokens
of overlap, at most 10 per document), from ``--clients`` callers each. Reports documents (pairs) per
second, windows per second, tokens per second and latency percentiles.

Writes ``bench/results/windows-<timestamp>.json`` and prints a table. Random-weight offline model:
scores mean nothing, tokenization and compute are the real model's.
"""

from __future__ import annotations

import time

import grpc
import numpy as np

from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from bench import results
from bench.loadgen import ClosedLoop
from bench.stats import p50_p99_ms
from bench.systems import NO_CACHE
from tools.arabic_text import QUERIES, passage

MODES = {"end": reranker_pb2.TRUNCATION_END, "split": reranker_pb2.TRUNCATION_SPLIT}


def pages(rng: np.random.Generator, count: int) -> list[str]:
    """Pages of 2,000-20,000 characters."""
    out = []
    for _ in range(count):
        chars = int(rng.integers(2000, 20001))
        out.append(passage(rng, chars // 60 + 2)[:chars])
    return out


def load(target: str, mode: int, requests: list[list[str]], clients: int, seconds: float) -> dict:
    """``clients`` callers sending the requests round robin for ``seconds``: throughput and latency."""
    def call(channel: grpc.Channel, n: int):
        request = reranker_pb2.RerankRequest(query=QUERIES[n % len(QUERIES)], documents=requests[n % len(requests)],
                                             truncation=mode, top_k=10)
        return reranker_pb2_grpc.RerankerStub(channel).Rerank(request, timeout=300).usage

    calls = ClosedLoop(call, clients, seconds=seconds,
                       session=lambda: grpc.insecure_channel(target, [("grpc.max_send_message_length", 64 << 20)]))
    started = time.perf_counter()
    calls.start().join(timeout_s=seconds + 330)
    elapsed = time.perf_counter() - started
    outcomes = calls.outcomes
    if failed := [o for o in outcomes if not o.ok]:
        raise failed[0].error
    documents, windows, tokens = (sum(getattr(o.value, field) for o in outcomes) for field in ("documents", "windows", "input_tokens"))
    return {
        "requests": len(outcomes), "pairs_per_s": round(documents / elapsed, 1),
        "windows_per_s": round(windows / elapsed, 1), "tokens_per_s": round(tokens / elapsed),
        "windows_per_document": round(windows / max(documents, 1), 2),
        **p50_p99_ms([(o.ended - o.started) * 1000 for o in outcomes], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--model", default="tiny", help="offline model to serve (tiny, small, ...)")
    parser.add_argument("--max-input-length", type=int, default=512)
    parser.add_argument("--documents", type=int, default=20, help="pages per request")
    parser.add_argument("--distinct", type=int, default=8, help="distinct requests sent round robin")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="per truncation mode")
    args = parser.parse_args(argv)
    model_dir = prepare(args.model)
    rng = np.random.default_rng(0)
    requests = [pages(rng, args.documents) for _ in range(args.distinct)]
    chars = [len(d) for r in requests for d in r]
    result: dict = {"model": args.model, "max_input_length": args.max_input_length,
                    "documents_per_request": args.documents, "clients": args.clients,
                    "page_chars": {"min": min(chars), "mean": round(float(np.mean(chars))), "max": max(chars)}, "modes": {}}
    with TritonServer(TritonOptions(model_dir=model_dir)) as triton:
        gateway_args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir),
                        "max_input_length": str(args.max_input_length), "max_message_bytes": str(64 << 20)}
        with GatewayProcess(gateway_args | NO_CACHE) as gateway:
            load(gateway.target, MODES["split"], requests[:1], 1, 1.0)  # warm up
            for name, mode in MODES.items():
                result["modes"][name] = load(gateway.target, mode, requests, args.clients, args.seconds)
                print(f"{name:>5}: {result['modes'][name]}", flush=True)
    results.finish("windows", "bench.windows", argv, args, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
