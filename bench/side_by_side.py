"""Does serving a second model cost the first one throughput while the second is idle?
``python -m bench.side_by_side`` (about 4 minutes on 2 cores).

The same closed-loop load (the benchmark's workload, ``--concurrency`` clients) on model ``--model``
(default ``small``: 12 x 384, the real tokenizer) served alone, and served beside ``--beside``
(default ``bert-l6``: ms-marco-MiniLM-L-6's shape) that gets no traffic, alternating ``--rounds``
times so that the machine's drift hits both alike. Each configuration is a fresh Triton + gateway.
Writes ``bench/results/side-by-side-<timestamp>.json``. Random-weight offline models: speed is real.
"""

from __future__ import annotations

import numpy as np

from ara_reranker_client import RerankerClient
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from bench import results
from bench.loadgen import run_level
from bench.systems import NO_CACHE
from bench.workload import make_workload


def measure(models: dict, concurrency: int, duration_s: float, workload) -> dict:
    """Pairs/s of the first model under the closed loop, with every model of ``models`` loaded."""
    first = next(iter(models))
    options = TritonOptions(models=models)
    with TritonServer(options) as triton:
        entries = ",".join(f"{name}={path}" for name, path in models.items())
        with GatewayProcess({"triton_endpoints": triton.grpc_url, "models": entries, **NO_CACHE}) as gateway:
            with RerankerClient(gateway.target, timeout=120) as client:
                call = lambda query, documents: client.rerank(query, documents, model=first)  # noqa: E731
                run_level(call, workload.requests, concurrency, 5.0, label="warm-up")
                level = run_level(call, workload.requests, concurrency, duration_s, label="+".join(models))
    return {"models": list(models), "pairs_per_s": round(level.pairs_per_s, 2), "p50_ms": round(level.p50_ms, 1),
            "p99_ms": round(level.p99_ms, 1), "errors": level.errors}


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--model", default="small")
    parser.add_argument("--beside", default="bert-l6")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    main_dir, other_dir = prepare(args.model), prepare(args.beside)
    workload = make_workload(AutoTokenizer.from_pretrained(main_dir))
    runs = []
    for _ in range(args.rounds):
        for models in ({args.model: main_dir}, {args.model: main_dir, args.beside: other_dir}):
            runs.append(measure(models, args.concurrency, args.seconds, workload))
            print(runs[-1], flush=True)
    alone = [r["pairs_per_s"] for r in runs if len(r["models"]) == 1]
    beside = [r["pairs_per_s"] for r in runs if len(r["models"]) == 2]
    result = {"model": args.model, "beside_idle": args.beside, "concurrency": args.concurrency,
              "runs": runs, "alone_mean": round(float(np.mean(alone)), 2), "beside_mean": round(float(np.mean(beside)), 2),
              "ratio": round(float(np.mean(beside) / np.mean(alone)), 3)}
    print(f"{args.model} alone {result['alone_mean']} pairs/s, beside an idle {args.beside} {result['beside_mean']} "
          f"pairs/s: ratio {result['ratio']} (runs alone {alone}, beside {beside})")
    results.finish("side-by-side", "bench.side_by_side", argv, args, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
