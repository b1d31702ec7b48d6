"""What the HTTP APIs cost over gRPC for the same request: ``python -m bench.http_overhead`` (~1 minute).

One real Triton + gateway (offline model, default ``tiny`` on the onnx engine: a small model, so the
transport's share shows) answers the same 10-document request through reranker.v1 (gRPC, the Python
client), TEI's ``POST /rerank`` and Cohere's ``POST /v1/rerank`` (HTTP, one kept-alive ``httpx``
connection each), one call at a time, the APIs interleaved in a shuffled order every round so that a
noisy machine disturbs them alike. Reports p50/p99 per API and each HTTP API's p50 minus gRPC's.

Writes ``bench/results/http-overhead-<timestamp>.json`` (``--out-dir`` to change) and prints a table.
"""

from __future__ import annotations

import time

import httpx
import numpy as np

from ara_reranker_client import RerankerClient
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from bench import results
from bench.markdown import table
from bench.stats import p50_p99_ms
from bench.systems import NO_CACHE
from tools.arabic_text import QUERIES, mixed_passages


def measure(model: str, engine: str, count: int, documents: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    requests = [(QUERIES[i % len(QUERIES)], mixed_passages(rng, documents)) for i in range(16)]
    model_dir = prepare(model, engine=engine)
    with TritonServer(TritonOptions(model_dir=model_dir, engine=engine)) as triton, \
            GatewayProcess({"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir), **NO_CACHE}) as gateway, \
            RerankerClient(gateway.target, timeout=60) as grpc_client, \
            httpx.Client(base_url=gateway.http_url, timeout=60) as http:
        def tei(query, docs):
            response = http.post("/rerank", json={"query": query, "texts": docs})
            response.raise_for_status()
            return response.json()

        def cohere(query, docs):
            response = http.post("/v1/rerank", json={"query": query, "documents": docs, "return_documents": False})
            response.raise_for_status()
            return response.json()

        apis = {"grpc reranker.v1": grpc_client.rerank, "http TEI /rerank": tei, "http Cohere /v1/rerank": cohere}
        latencies: dict[str, list[float]] = {name: [] for name in apis}
        for round_ in range(count + max(3, count // 10)):  # the first rounds warm up, not counted
            query, docs = requests[round_ % len(requests)]
            for name in rng.permutation(list(apis)):
                started = time.perf_counter()
                apis[name](query, docs)
                if round_ >= max(3, count // 10):
                    latencies[name].append((time.perf_counter() - started) * 1000)
    out: dict = {"model": model, "engine": engine, "documents": documents, "count": count, "apis": {}}
    for name, values in latencies.items():
        out["apis"][name] = p50_p99_ms(values)
    base = out["apis"]["grpc reranker.v1"]["p50_ms"]
    for figures in out["apis"].values():
        figures["p50_minus_grpc_ms"] = round(figures["p50_ms"] - base, 3)
    return out


def markdown(result: dict) -> str:
    return "\n".join(table(["API", "p50 ms", "p99 ms", "p50 − gRPC ms"],
                           [(name, f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}", f"{f['p50_minus_grpc_ms']:+.2f}")
                            for name, f in result["apis"].items()], "lrrr"))


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__, model="tiny", engine="onnx")
    parser.add_argument("--count", type=int, default=300, help="calls per API")
    parser.add_argument("--documents", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    result = measure(args.model, args.engine, args.count, args.documents, args.seed)
    results.finish("http-overhead", "bench.http_overhead", argv, args, result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
