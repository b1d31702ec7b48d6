"""What the score cache buys: ``python -m bench.cache`` (~3 minutes with the default ``small`` model).

1. A repeated request: one 200-document request sent to a fresh gateway, then sent again (answered from
   the cache); the repeat's time over the first's (the target is at most 0.5).
2. Traffic with realistic repetition: a corpus of ``--corpus`` passages and ``--queries`` queries; each
   request is one query (Zipf-distributed: popular questions recur) and ``--docs`` passages drawn
   Zipf-distributed from the corpus (popular documents recur), so some (query, document) pairs come back.
   The same request sequence is served by a gateway with the cache off, then by one with it on (a fresh
   cache), both in front of the same Triton, at ``--clients`` concurrent callers for ``--seconds``:
   pairs per second, latency, and the share of pairs answered from the cache.

Writes ``bench/results/cache-<timestamp>.json`` and prints a table. Offline random-weight model: the
scores mean nothing; tokenization and compute are the real model's.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from ara_reranker_client import RerankerClient
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from bench import results
from bench.loadgen import run_level
from bench.markdown import table
from bench.systems import triton_metrics
from bench.workload import Request
from tools.arabic_text import QUERIES, mixed_passages


def zipf_requests(rng: np.random.Generator, corpus: list[str], queries: list[str], requests: int, docs: int,
                  exponent: float) -> list[Request]:
    """Requests whose query and documents are drawn Zipf-distributed (rank r with weight 1/r^exponent)."""
    def weights(n: int) -> np.ndarray:
        w = 1.0 / np.arange(1, n + 1) ** exponent
        return w / w.sum()

    doc_w, query_w = weights(len(corpus)), weights(len(queries))
    out = []
    for _ in range(requests):
        picked = rng.choice(len(corpus), size=docs, replace=False, p=doc_w)
        out.append(Request(queries[rng.choice(len(queries), p=query_w)], [corpus[i] for i in picked]))
    return out


def cache_hits(metrics_url: str) -> tuple[float, float]:
    """The gateway's score cache hits and misses so far (every model together)."""
    counts = triton_metrics(metrics_url, {"hits": "reranker_score_cache_hits_total", "misses": "reranker_score_cache_misses_total"})
    return counts["hits"], counts["misses"]


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__, model="small", engine="onnx")
    parser.add_argument("--repeat-docs", type=int, default=200, help="documents of the repeated request")
    parser.add_argument("--corpus", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--docs", type=int, default=20, help="documents per request of the Zipf workload")
    parser.add_argument("--exponent", type=float, default=1.1, help="Zipf exponent of queries and documents")
    parser.add_argument("--requests", type=int, default=2000, help="distinct requests in the sequence")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--cache-mb", default="128")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    corpus = mixed_passages(rng, args.corpus)
    queries = [f"{QUERIES[i % len(QUERIES)]} {i}" for i in range(args.queries)]
    requests = zipf_requests(rng, corpus, queries, args.requests, args.docs, args.exponent)
    repeated = mixed_passages(rng, args.repeat_docs)
    model_dir = prepare(args.model, engine=args.engine)
    result: dict = {"model": args.model, "engine": args.engine, "cache_mb": args.cache_mb,
                    "workload": {"corpus": args.corpus, "queries": args.queries, "docs_per_request": args.docs,
                                 "zipf_exponent": args.exponent, "requests": args.requests, "clients": args.clients,
                                 "seconds": args.seconds}}
    base = {"tokenizer": str(model_dir), "max_documents": str(max(1000, args.repeat_docs))}
    with TritonServer(TritonOptions(model_dir=model_dir, engine=args.engine)) as triton:
        base["triton_endpoints"] = triton.grpc_url
        with GatewayProcess(base | {"score_cache_mb": args.cache_mb}) as gateway, RerankerClient(gateway.target, timeout=600) as client:
            client.rerank(QUERIES[0], ["إحماء"])  # warm the path, not the cache of what follows
            started = time.perf_counter()
            client.rerank(QUERIES[1], repeated)
            first = time.perf_counter() - started
            started = time.perf_counter()
            client.rerank(QUERIES[1], repeated)
            again = time.perf_counter() - started
        result["repeated_request"] = {"documents": args.repeat_docs, "first_ms": round(first * 1000, 1),
                                      "repeat_ms": round(again * 1000, 1), "ratio": round(again / first, 4)}
        result["zipf"] = {}
        for label, mb in (("cache off", "0"), ("cache on", args.cache_mb)):
            with GatewayProcess(base | {"score_cache_mb": mb}) as gateway, RerankerClient(gateway.target, timeout=600) as client:
                level = run_level(client.rerank, requests, args.clients, args.seconds, label=label)
                hits, misses = cache_hits(gateway.metrics_url)
            row = asdict(level) | {"hit_share": round(hits / (hits + misses), 4) if hits + misses else 0.0}
            result["zipf"][label] = row
            print(f"  {label:10s} {level.pairs_per_s:8.1f} pairs/s  p50 {level.p50_ms:7.1f} ms  p99 {level.p99_ms:7.1f} ms  "
                  f"hits {row['hit_share']:.1%}  errors {level.errors}", flush=True)
    off, on = result["zipf"]["cache off"], result["zipf"]["cache on"]
    result["zipf_speedup"] = round(on["pairs_per_s"] / off["pairs_per_s"], 3) if off["pairs_per_s"] else None
    results.finish("cache", "bench.cache", argv, args, result, markdown)
    return 0 if not (off["errors"] or on["errors"]) else 1


def markdown(result: dict) -> str:
    r = result["repeated_request"]
    rows = [f"Repeated {r['documents']}-document request: first {r['first_ms']:.0f} ms, repeat {r['repeat_ms']:.0f} ms "
            f"(ratio {r['ratio']:.3f}).", ""]
    rows += table(["Zipf workload", "pairs/s", "p50 ms", "p99 ms", "pairs from the cache"],
                  [(label, f"{z['pairs_per_s']:.1f}", f"{z['p50_ms']:.1f}", f"{z['p99_ms']:.1f}", f"{z['hit_share']:.1%}")
                   for label, z in result["zipf"].items()], "lrrrr")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
