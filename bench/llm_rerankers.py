"""LLM rerankers beside cross-encoders of similar cost, in-process and served: ``python -m bench.llm_rerankers``
(about 2 minutes per model on 2 cores at the defaults).

Per model of ``--models`` (offline random-weight stand-ins, built when absent: ``tiny`` and ``small`` XLM-R
cross-encoders, ``qwen3-tiny``, and ``qwen3-l28`` with Qwen3-Reranker-0.6B's shape when named), two systems of
bench/systems.py, one after the other, on the same requests at the same ``--concurrency`` levels of closed-loop
callers for ``--duration`` seconds each:

- ``limit-torch``: the in-process limit (``InProcessLimit``: the Triton model's own scorer and torch engine, batched
  as configs/cpu.pbtxt says, no transport);
- ``service-torch``: this service (``ServiceSystem``: the gateway and tritonserver serving model.py on the torch
  engine with configs/cpu.pbtxt, called through the generated client); not for the models of ``--limit-only``.

The workload is the benchmark's mixed one (``--docs`` documents of ~20-400 tokens per request, sized with each
model's tokenizer). Reported per system and level: pairs/s, p50 and p99 latency, and the tokens per pair the model
really computes; the table adds the service's pairs/s over the limit's. A Qwen3-Reranker is fed its recipe's whole
prompts (system line, instruction, query, document, the empty think block: ~70 tokens more than the pair), which is
part of what it costs. Before measuring the service, its scores for the first ``--check-requests`` requests are
compared with the limit's: a difference over 1e-4 stops the run and nothing is written. Writes
``bench/results/llm-rerankers-<timestamp>.json``. Random weights: the speed is real, the scores mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import results
from bench.loadgen import run_level
from bench.markdown import table
from bench.worker import make_system
from bench.workload import Request, Workload, make_workload

__all__ = ["LIMIT", "SERVICE", "ScoreMismatch", "check_scores", "markdown", "measure", "scores_by_document"]

LIMIT, SERVICE = "limit-torch", "service-torch"
SYSTEMS = {LIMIT: "the in-process limit (configs/cpu.pbtxt's batching, no transport)",
           SERVICE: "gateway + tritonserver (configs/cpu.pbtxt), through the gRPC client"}
SCORE_ATOL = 1e-4  # the service's scores equal the in-process limit's (tests/test_llm_gateway.py's tolerance)


class ScoreMismatch(ValueError):
    """The service scored some request otherwise than the in-process limit: its speed is not worth reporting."""


def scores_by_document(answer) -> np.ndarray:
    """A system's answer to one request as scores in document order: the limit's array as it is, the service's
    ranked results (``index``, ``score``) put back in their documents' order."""
    if isinstance(answer, np.ndarray):
        return answer.astype(np.float64)
    return np.array([r.score for r in sorted(answer, key=lambda r: r.index)], dtype=np.float64)


def check_scores(reference: list[np.ndarray], answers: list[np.ndarray], what: str) -> float:
    """The largest difference between ``answers`` and the ``reference`` scores of the same requests; ScoreMismatch
    when a request's documents differ in number or a score by more than SCORE_ATOL."""
    worst = 0.0
    for k, (expected, got) in enumerate(zip(reference, answers, strict=True)):
        if expected.shape != got.shape:
            raise ScoreMismatch(f"{what}: request {k} answered {got.shape[0]} scores for {expected.shape[0]} documents")
        worst = max(worst, float(np.max(np.abs(expected - got), initial=0.0)))
        if worst > SCORE_ATOL:
            raise ScoreMismatch(f"{what}: request {k}'s scores differ from {LIMIT}'s by {worst:.2e} (> {SCORE_ATOL:g})")
    return worst


def _levels(system, name: str, label: str, requests: list[Request], concurrency: list[int], duration_s: float) -> list[dict]:
    """Each concurrency level of one started system, after a warm-up; the tokens per pair from its counters."""
    run_level(system.rerank, requests, concurrency[0], 3.0, label=f"{label} {name} warm-up")
    levels = []
    for c in concurrency:
        before = system.counters()
        level = run_level(system.rerank, requests, c, duration_s, label=f"{label} {name}")
        after = system.counters()
        rows = after["rows"] - before["rows"]
        levels.append({"system": name, "concurrency": c, "pairs_per_s": round(level.pairs_per_s, 2),
                       "p50_ms": round(level.p50_ms, 1), "p99_ms": round(level.p99_ms, 1), "errors": level.errors,
                       "tokens_per_pair": round((after["real_tokens"] - before["real_tokens"]) / max(rows, 1), 1)})
        print(f"{label} {name} c={c}: {levels[-1]}", flush=True)
    return levels


def measure(model: str, concurrency: list[int], duration_s: float, docs: int, requests: int, *, service: bool = True,
            check_requests: int = 4) -> dict:
    """``model`` in-process, then (``service``) served, at each concurrency level on the same requests; the served
    scores of the first ``check_requests`` requests checked against the in-process ones first."""
    from ara_reranker_model.families import family_of
    from ara_reranker_model.store import prepare

    model_dir = prepare(model)
    with make_system(LIMIT, model_dir, {}) as limit:
        workload: Workload = make_workload(limit.tokenizer, requests=requests, docs_per_request=docs)
        checked = workload.requests[:check_requests]
        reference = [scores_by_document(limit.rerank(r.query, r.documents)) for r in checked]
        levels = _levels(limit, LIMIT, model, workload.requests, concurrency, duration_s)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    out = {"family": family_of(config), "layers": config["num_hidden_layers"], "hidden": config["hidden_size"],
           "workload": workload.summary(), "levels": levels}
    if service:
        with make_system(SERVICE, model_dir, {}) as served:
            answers = [scores_by_document(served.rerank(r.query, r.documents)) for r in checked]
            out["score_check"] = {"requests": len(checked), "atol": SCORE_ATOL,
                                  "max_abs_diff": check_scores(reference, answers, f"{SERVICE} on {model}")}
            out["levels"] += _levels(served, SERVICE, model, workload.requests, concurrency, duration_s)
    return out


def _ratio(model: dict, level: dict) -> str:
    """The service's pairs/s over the limit's at the same level (blank on the limit's rows)."""
    if level["system"] == LIMIT:
        return ""
    base = next((x for x in model["levels"] if x["system"] == LIMIT and x["concurrency"] == level["concurrency"]), None)
    return f"{level['pairs_per_s'] / base['pairs_per_s']:.2f}" if base and base["pairs_per_s"] else ""


def markdown(result: dict) -> str:
    """The table docs/benchmarks.md shows."""
    rows = [(f"`{model}`", m["family"], f"{m['layers']} x {m['hidden']}", level["system"], level["concurrency"],
             f"{level['pairs_per_s']:,.1f}", _ratio(m, level), f"{level['p50_ms']:,.0f} ms", f"{level['p99_ms']:,.0f} ms",
             f"{level['tokens_per_pair']:,.0f}")
            for model, m in result["models"].items() for level in m["levels"]]
    header = ["model", "family", "layers x hidden", "system", "callers", "pairs/s", "service / limit", "p50", "p99",
              "tokens per pair"]
    return "\n".join(table(header, rows, align="lllllrrrrr"))


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--models", default="tiny,qwen3-tiny,small", help="offline models, comma-separated")
    parser.add_argument("--limit-only", default="",
                        help="of --models, those measured in-process only (no service-torch rows), comma-separated")
    parser.add_argument("--concurrency", default="1,4", help="closed-loop callers per level")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per level")
    parser.add_argument("--docs", type=int, default=10, help="documents per request")
    parser.add_argument("--requests", type=int, default=48, help="distinct requests in the workload")
    parser.add_argument("--check-requests", type=int, default=4,
                        help=f"requests whose served scores must equal the in-process ones within {SCORE_ATOL:g}")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    limit_only = [m for m in args.limit_only.split(",") if m]
    if unknown := set(limit_only) - set(models):
        parser.error(f"--limit-only names models not in --models: {sorted(unknown)}")
    concurrency = [int(c) for c in args.concurrency.split(",")]
    result = {"systems": SYSTEMS,
              "models": {m: measure(m, concurrency, args.duration, args.docs, args.requests, service=m not in limit_only,
                                    check_requests=args.check_requests) for m in models}}
    results.finish("llm-rerankers", "bench.llm_rerankers", argv, args, result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
