"""What the shipped CPU default that keeps small calls fair costs in throughput, and where the service stands against
the in-process limit, measured in one run with the systems taking turns.

The CPU default keeps a model instance free for small calls (two Triton instances; the gateway holds large
requests' chunks to one fewer than the instances: docs/configuration.md#small-calls-first-a-free-instance-beside-large-requests).
Its price is measured here against the same service with one instance and no bound, and both against the in-process
limit (model.py's recipe in the benchmark's process). All three are started once and stay up; then each round
measures every system at every level, one after another, the order reversed every other round, so that the
machine's drift (±5-15 % here from minute to minute) falls on all three alike. Medians over the rounds.

    python -m bench.default_price [--workloads mixed,uniform-128] [--concurrency 1,8] [--rounds 3] [--seconds 15]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from bench import results
from bench.loadgen import run_level
from bench.markdown import table
from bench.repository import edited_copy
from bench.run import prepare_model
from bench.systems import ServiceSystem
from bench.worker import make_system
from bench.workload import SHAPES, make_workload

SYSTEMS = ("limit", "service", "service-1-instance")
DESCRIBED = {
    "limit": "in-process limit (model.py's recipe, one instance's threads)",
    "service": "service, shipped CPU default (2 instances, large requests bound to 1)",
    "service-1-instance": "service, 1 instance, no bound (not fair to small calls)",
}


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__, model="small", engine="onnx")
    results.add_names(parser, "--workloads", sorted(SHAPES), "workloads")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0, help="shortest window per level (loadgen.run_level)")
    parser.add_argument("--requests", type=int, default=96)
    args = parser.parse_args(argv)
    workloads = args.workloads or ["mixed", "uniform-128"]
    levels = [int(c) for c in args.concurrency.split(",")]
    model_dir = prepare_model(args.model, args.engine == "onnx")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data: dict = {"model": args.model, "engine": args.engine, "rounds": args.rounds, "seconds": args.seconds,
                  "systems": DESCRIBED, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="default-price-") as tmp:
        systems = {
            "limit": make_system(f"limit-{args.engine}", model_dir, {}),
            "service": ServiceSystem(model_dir, args.engine),
            "service-1-instance": ServiceSystem(model_dir, args.engine, gateway_args={"dispatch_window_chunks": "0"},
                                                model_repository=edited_copy(Path(tmp), instances=1)),
        }
        started = []
        try:
            for name, system in systems.items():
                system.__enter__()
                started.append(system)
                print(f"{name}: up", file=sys.stderr, flush=True)
            for workload_name in workloads:
                shape = dict(SHAPES[workload_name])
                docs = shape.pop("docs_per_request", 10)
                workload = make_workload(tokenizer, requests=args.requests, docs_per_request=docs, **shape)
                for name, system in systems.items():  # warm: every request shape seen once
                    run_level(system.rerank, workload.requests, min(4, max(levels)), 5.0, label=f"{name} warm-up")
                data["workloads"][workload_name] = measure(systems, workload, levels, args.rounds, args.seconds)
        finally:
            for system in reversed(started):
                system.__exit__(None, None, None)
    results.finish("default-price", "bench.default_price", argv, args, data, markdown)
    return 0


def measure(systems: dict, workload, levels: list[int], rounds: int, seconds: float) -> dict:
    """pairs/s of every system at every level, round by round, and their medians and ratios."""
    runs: dict = {name: {str(c): [] for c in levels} for name in systems}
    p99: dict = {name: {str(c): [] for c in levels} for name in systems}
    for r in range(rounds):
        order = list(systems) if r % 2 == 0 else list(reversed(systems))
        for c in levels:
            for name in order:
                level = run_level(systems[name].rerank, workload.requests, c, seconds, start_at=1000 * (r + 1), label=name)
                runs[name][str(c)].append(round(level.pairs_per_s, 2))
                p99[name][str(c)].append(round(level.p99_ms, 1))
                print(f"round {r} c={c} {name:20s} {level.pairs_per_s:8.2f} pairs/s p99 {level.p99_ms:8.1f} ms",
                      file=sys.stderr, flush=True)
    out: dict = {"workload": workload.summary(), "pairs_per_s": runs, "p99_ms": p99, "levels": {}}
    for c in levels:
        median = {name: statistics.median(runs[name][str(c)]) for name in systems}
        out["levels"][str(c)] = {
            "median_pairs_per_s": median,
            "service_over_limit": round(median["service"] / median["limit"], 3),
            "one_instance_over_limit": round(median["service-1-instance"] / median["limit"], 3),
            "price_of_the_default": round(1 - median["service"] / median["service-1-instance"], 3),
        }
    return out


def markdown(data: dict) -> str:
    rows = []
    for name, w in data["workloads"].items():
        for c, level in w["levels"].items():
            m = level["median_pairs_per_s"]
            rows.append((name, c, f"{m['limit']:.1f}", f"**{m['service']:.1f}**", f"{m['service-1-instance']:.1f}",
                         f"{level['service_over_limit']:.2f}", f"{level['one_instance_over_limit']:.2f}",
                         f"{100 * level['price_of_the_default']:+.0f} %"))
    return "\n".join(table(["workload", "callers", "limit pairs/s", "service (default) pairs/s", "service, 1 instance pairs/s",
                            "default / limit", "1 instance / limit", "price of the default"], rows, "lrrrrrrr"))


if __name__ == "__main__":
    sys.exit(main())
