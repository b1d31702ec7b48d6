"""What the shipped CPU default that keeps small calls fair costs in throughput, and where the service stands against
the in-process limit, measured in one run with the systems taking turns.

The CPU default keeps a model instance free for small calls (two Triton instances; the gateway holds large
requests' chunks to one fewer than the instances: docs/configuration.md#small-calls-first-a-free-instance-beside-large-requests).
Its price is measured against the same service with one instance and nothing held back, and both against the
in-process limit (model.py's recipe in the measuring process). This machine drifts 5-15 % from minute to minute, more
than the differences measured, so the systems are measured side by side:

- one caller: the three are up at once (an idle one uses about a millisecond of CPU a second) and each request is
  sent to all three in a shuffled order, request after request (``--calls``); the figures are over the same requests,
  and the ratios the medians of each request's own;
- several callers (the other ``--concurrency`` levels): each round measures every system in turn, each in a fresh
  process started for it (``bench.worker``, as ``make bench`` runs them: warm-up, every level, stop), the order
  reversed every other round; medians over the rounds.

    python -m bench.default_price [--workloads mixed,uniform-128] [--concurrency 1,8] [--calls 60] [--rounds 3]
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import results
from bench.markdown import table
from bench.results import PROJECT_ROOT
from bench.run import prepare_model
from bench.workload import SHAPES, make_workload

SYSTEMS = ("limit", "service", "service-1-instance")
DESCRIBED = {
    "limit": "in-process limit (model.py's recipe, one instance's threads)",
    "service": "service, shipped CPU default (2 instances, large requests' chunks on 1 at most)",
    "service-1-instance": "service, 1 instance, nothing held back (not fair to small calls)",
}


def worker_options(name: str) -> dict:
    """``bench.worker``'s options for one of SYSTEMS."""
    if name == "service-1-instance":
        return {"triton_edits": {"instance_group.0.count": 1}, "gateway_args": {"dispatch_window_chunks": "0"}}
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__, model="small", engine="onnx")
    results.add_names(parser, "--workloads", sorted(SHAPES), "workloads")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=60, help="requests sent to each system at one caller")
    parser.add_argument("--seconds", type=float, default=15.0, help="shortest window per level (loadgen.run_level)")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up of each system before its levels, seconds")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--seed", type=int, default=20240501)
    args = parser.parse_args(argv)
    if args.workloads == sorted(SHAPES):  # not chosen: the two the fairness default could cost most
        args.workloads = ["mixed", "uniform-128"]
    levels = [int(c) for c in args.concurrency.split(",")]
    model_dir = prepare_model(args.model, args.engine == "onnx")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data: dict = {"model": args.model, "engine": args.engine, "rounds": args.rounds, "seconds": args.seconds,
                  "calls": args.calls, "systems": DESCRIBED, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="default-price-") as tmp_name:
        tmp = Path(tmp_name)
        for workload_name in args.workloads:
            shape = dict(SHAPES[workload_name])
            docs = shape.pop("docs_per_request", 10)
            workload = make_workload(tokenizer, seed=args.seed, requests=args.requests, docs_per_request=docs, **shape)
            workload.save(path := tmp / f"{workload_name}.json")
            several = [c for c in levels if c > 1]
            run = functools.partial(run_worker, args=args, model_dir=model_dir, workload=path, levels=several)
            out = measure(run, workload.summary(), several, args.rounds, tmp) if several else {"workload": workload.summary(), "levels": {}}
            if 1 in levels:
                out["levels"] = {"1": side_by_side(model_dir, args.engine, workload, args.calls), **out["levels"]}
            data["workloads"][workload_name] = out
    results.finish("default-price", "bench.default_price", argv, args, data, markdown)
    return 0


def side_by_side(model_dir: Path, engine: str, workload, calls: int) -> dict:
    """One caller: every request sent to the three systems, up at once, in a shuffled order; pairs/s over the same
    requests, and each request's latency over the limit's (medians)."""
    import contextlib

    from bench.systems import ServiceSystem
    from bench.worker import make_system

    requests = workload.requests
    with contextlib.ExitStack() as stack:
        systems = {name: stack.enter_context(make_system(f"limit-{engine}", model_dir, {}) if name == "limit"
                                             else ServiceSystem(model_dir, engine, **worker_options(name)))
                   for name in SYSTEMS}
        instances = {name: system.model_instances() for name, system in systems.items() if hasattr(system, "model_instances")}
        for request in requests[:8]:  # warm
            for system in systems.values():
                system.rerank(request.query, request.documents)
        latency: dict = {name: [] for name in SYSTEMS}
        rng = np.random.default_rng(0)
        pairs = 0
        for n in range(calls):
            request = requests[(8 + n) % len(requests)]
            pairs += len(request.documents)
            for name in rng.permutation(SYSTEMS):
                started = time.perf_counter()
                systems[name].rerank(request.query, request.documents)
                latency[name].append(time.perf_counter() - started)
            if (n + 1) % 10 == 0:
                print(f"one caller: {n + 1}/{calls} requests to each", file=sys.stderr, flush=True)
    rate = {name: round(pairs / sum(latency[name]), 2) for name in SYSTEMS}
    ratio = lambda a, b: round(statistics.median(x / y for x, y in zip(latency[b], latency[a])), 3)  # noqa: E731
    return {"method": f"side by side, {calls} requests to each", "median_pairs_per_s": rate, "model_instances": instances,
            "p50_ms": {name: round(1000 * statistics.median(latency[name]), 1) for name in SYSTEMS},
            "service_over_limit": ratio("service", "limit"), "one_instance_over_limit": ratio("service-1-instance", "limit"),
            "price_of_the_default": round(1 - ratio("service", "service-1-instance"), 3)}


def run_worker(name: str, *, args, model_dir: Path, workload: Path, levels: list[int], out: Path) -> dict:
    """One system measured at each of ``levels`` in a fresh ``bench.worker`` process; its result."""
    command = [sys.executable, "-m", "bench.worker", "--system", f"{'limit' if name == 'limit' else 'service'}-{args.engine}",
               "--model-dir", str(model_dir), "--workload", str(workload), "--concurrency", ",".join(map(str, levels)),
               "--duration", str(args.seconds), "--warmup", str(args.warmup), "--options", json.dumps(worker_options(name)),
               "--out", str(out)]
    code = subprocess.run(command, cwd=PROJECT_ROOT).returncode
    result = json.loads(out.read_text()) if out.exists() else {}
    if code or "error" in result or not result.get("levels"):
        raise SystemExit(f"{name}: worker exited with {code}: {result.get('error', 'no result')}")
    return result


def measure(run, workload: dict, levels: list[int], rounds: int, tmp: Path) -> dict:
    """pairs/s and p99 of every system at every level, round by round (``run(name, out=path)``: one system's worker
    result), and their medians and ratios."""
    runs: dict = {name: {str(c): [] for c in levels} for name in SYSTEMS}
    p99: dict = {name: {str(c): [] for c in levels} for name in SYSTEMS}
    instances: dict = {}  # the services' model instances, as each round found them
    for r in range(rounds):
        for name in SYSTEMS if r % 2 == 0 else reversed(SYSTEMS):
            started = time.perf_counter()
            result = run(name, out=tmp / f"{name}-{r}.json")
            if "model_instances" in result:
                instances.setdefault(name, []).append(result["model_instances"])
            for level in result["levels"]:
                runs[name][str(level["concurrency"])].append(round(level["pairs_per_s"], 2))
                p99[name][str(level["concurrency"])].append(round(level["p99_ms"], 1))
            print(f"round {r} {name:20s} " + "  ".join(f"c={c}: {runs[name][str(c)][-1]:.2f} pairs/s" for c in levels)
                  + f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    out: dict = {"workload": workload, "pairs_per_s": runs, "p99_ms": p99, "model_instances": instances, "levels": {}}
    for c in levels:
        median = {name: statistics.median(runs[name][str(c)]) for name in SYSTEMS}
        out["levels"][str(c)] = {
            "method": f"medians of {rounds} rounds",
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
            rows.append((name, c, level["method"], f"{m['limit']:.1f}", f"**{m['service']:.1f}**", f"{m['service-1-instance']:.1f}",
                         f"{level['service_over_limit']:.2f}", f"{level['one_instance_over_limit']:.2f}",
                         f"{100 * level['price_of_the_default']:+.0f} %"))
    return "\n".join(table(["workload", "callers", "measured", "limit pairs/s", "service (default) pairs/s", "service, 1 instance pairs/s",
                            "default / limit", "1 instance / limit", "price of the default"], rows, "lrlrrrrrr"))


if __name__ == "__main__":
    sys.exit(main())
