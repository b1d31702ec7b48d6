"""LLM rerankers beside cross-encoders of similar cost: ``python -m bench.llm_rerankers`` (about 2 minutes per
model on 2 cores at the defaults).

Per model of ``--models`` (offline random-weight stand-ins, built when absent: ``tiny`` and ``small`` XLM-R
cross-encoders, ``qwen3-tiny``, and ``qwen3-l28`` with Qwen3-Reranker-0.6B's shape when named), the in-process limit
(bench/systems.py's ``InProcessLimit``: the Triton model's own scorer and engine, batched as configs/cpu.pbtxt says)
under the benchmark's mixed workload (``--docs`` documents of ~20-400 tokens per request, sized with each model's
tokenizer) at each of ``--concurrency`` closed-loop callers for ``--duration`` seconds: pairs/s, p50 and p99
latency, and the tokens per pair the model really computes. A Qwen3-Reranker is fed its recipe's whole prompts
(system line, instruction, query, document, the empty think block: ~70 tokens more than the pair), which is part of
what it costs. Writes ``bench/results/llm-rerankers-<timestamp>.json``. Random weights: the speed is real, the
scores mean nothing.
"""

from __future__ import annotations

import json

from bench import results
from bench.loadgen import run_level
from bench.markdown import table
from bench.worker import config_parameters
from bench.workload import make_workload


def measure(model: str, concurrency: list[int], duration_s: float, docs: int, requests: int) -> dict:
    """The in-process limit of ``model`` at each concurrency level."""
    from ara_reranker_model.families import family_of
    from ara_reranker_model.store import prepare
    from bench.systems import InProcessLimit

    model_dir = prepare(model)
    params = config_parameters("cpu")
    system = InProcessLimit(model_dir, "torch", threads=int(params["num_threads"]), workers=int(params["forward_workers"]),
                            max_batch_tokens=int(params["max_batch_tokens"]),
                            overhead_tokens=int(params["batch_overhead_tokens"]))
    workload = make_workload(system.tokenizer, requests=requests, docs_per_request=docs)
    levels = []
    with system:
        run_level(system.rerank, workload.requests, concurrency[0], 3.0, label=f"{model} warm-up")
        for c in concurrency:
            before = dict(system.counters())
            level = run_level(system.rerank, workload.requests, c, duration_s, label=model)
            after = system.counters()
            rows = after["rows"] - before["rows"]
            levels.append({"concurrency": c, "pairs_per_s": round(level.pairs_per_s, 2), "p50_ms": round(level.p50_ms, 1),
                           "p99_ms": round(level.p99_ms, 1), "errors": level.errors,
                           "tokens_per_pair": round((after["real_tokens"] - before["real_tokens"]) / max(rows, 1), 1)})
            print(f"{model} c={c}: {levels[-1]}", flush=True)
    config = json.loads((model_dir / "config.json").read_text())
    return {"family": family_of(config), "layers": config["num_hidden_layers"], "hidden": config["hidden_size"],
            "workload": workload.summary(), "levels": levels}


def markdown(result: dict) -> str:
    """The table docs/benchmarks.md shows."""
    rows = [(f"`{model}`", m["family"], f"{m['layers']} x {m['hidden']}", level["concurrency"], f"{level['pairs_per_s']:,.1f}",
             f"{level['p50_ms']:,.0f} ms", f"{level['p99_ms']:,.0f} ms", f"{level['tokens_per_pair']:,.0f}")
            for model, m in result["models"].items() for level in m["levels"]]
    return "\n".join(table(["model", "family", "layers x hidden", "callers", "pairs/s", "p50", "p99", "tokens per pair"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--models", default="tiny,qwen3-tiny,small", help="offline models, comma-separated")
    parser.add_argument("--concurrency", default="1,4", help="closed-loop callers per level")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per level")
    parser.add_argument("--docs", type=int, default=10, help="documents per request")
    parser.add_argument("--requests", type=int, default=48, help="distinct requests in the workload")
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    result = {"system": "limit-torch (configs/cpu.pbtxt)",
              "models": {m: measure(m, concurrency, args.duration, args.docs, args.requests) for m in args.models.split(",") if m}}
    results.finish("llm-rerankers", "bench.llm_rerankers", argv, args, result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
