"""One system, measured in its own process (``python -m bench.worker``; bench/run.py starts it).

A fresh process per system keeps the figures independent: no model of an earlier system stays in
memory or in the caches, and the peak RSS is the system's own. Writes one JSON object to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from bench.loadgen import run_count, run_level
from bench.memory import PeakRss
from bench.workload import Workload

__all__ = ["make_system", "SYSTEMS"]

SYSTEMS = ("limit-torch", "limit-onnx", "limit-torch-bf16", "sentence-transformers", "infinity-torch",
           "infinity-optimum", "service-onnx", "service-torch")


def config_parameters(config: str = "cpu") -> dict[str, str]:
    """The ``parameters`` of one of the Triton model's configs: ``cpu`` (configs/cpu.pbtxt) or ``gpu``
    (config.pbtxt, the production one)."""
    from ara_reranker_server import triton_config

    return triton_config.parameters(triton_config.read(triton_config.CONFIGS[config]))



def make_system(name: str, model_dir: Path, options: dict):
    """The system called ``name`` (one of SYSTEMS), not yet started. The in-process limit batches and
    threads as the service's CPU config says (options may override), so that both are the same recipe."""
    from bench import systems

    params = config_parameters("cpu") | {k: str(v) for k, v in options.get("model_parameters", {}).items()}
    if name.startswith("limit-"):
        engine, _, dtype = name.removeprefix("limit-").partition("-")
        return systems.InProcessLimit(
            model_dir, engine, dtype=dtype or "auto", threads=int(params.get("num_threads", "0")),
            workers=int(params.get("forward_workers", "1")), max_batch_tokens=int(params.get("max_batch_tokens", "8192")),
            overhead_tokens=int(params.get("batch_overhead_tokens", "0")),
        )
    if name == "sentence-transformers":
        return systems.SentenceTransformersCE(model_dir)
    if name.startswith("infinity-"):
        from bench.infinity import DEFAULT_BATCH_SIZE, InfinitySystem

        return InfinitySystem(model_dir, name.removeprefix("infinity-"), log_dir=options.get("log_dir"),
                              batch_size=int(options.get("infinity_batch_size", DEFAULT_BATCH_SIZE)))
    if name.startswith("service-"):
        return systems.ServiceSystem(model_dir, name.removeprefix("service-"), gateway_args=options.get("gateway_args"),
                                     log_dir=options.get("log_dir"), config_name=options.get("config_name"),
                                     triton_edits=options.get("triton_edits"))
    raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")


def _derived(before: dict, after: dict) -> dict:
    """Padding ratio and batch sizes over one level, from counter deltas."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    out = {}
    if delta.get("padded_tokens"):
        out["padding_ratio"] = round(delta["real_tokens"] / delta["padded_tokens"], 4)
    if delta.get("forwards"):
        out["rows_per_forward"] = round(delta["rows"] / delta["forwards"], 2)
    if delta.get("exec_count"):
        out["triton_batch_rows"] = round(delta["inference_count"] / delta["exec_count"], 2)
        out["triton_batch_requests"] = round(delta["request_success"] / delta["exec_count"], 2)
        out["triton_queue_ms"] = round(delta["queue_us"] / 1000 / max(delta["request_success"], 1), 2)
    return out


def measure(name: str, model_dir: Path, workload: Workload, concurrency: list[int], duration_s: float,
            warmup_s: float, count: int, options: dict) -> dict:
    """Start the system, warm it up, run every level, then ``count`` sequential calls, and stop it."""
    started = time.perf_counter()
    system = make_system(name, model_dir, options)
    result: dict = {"system": name, "levels": []}
    if name.startswith("infinity-"):  # what it reads of a pair, and pairs per forward pass (no token budget)
        result["max_tokens"], result["batch_size"] = system.max_tokens, system.batch_size
    with system, PeakRss(system.pids) as rss:
        result["startup_s"] = round(time.perf_counter() - started, 1)
        if hasattr(system, "model_instances"):
            result["model_instances"] = system.model_instances()
        call = system.rerank
        if concurrency:
            run_level(call, workload.requests, min(4, max(concurrency)), warmup_s, label=f"{name} warm-up")
        for i, c in enumerate(concurrency):
            before = system.counters()
            level = run_level(call, workload.requests, c, duration_s, start_at=1000 * (i + 1), label=name)
            row = asdict(level) | _derived(before, system.counters())
            result["levels"].append(row)
            print(f"  {name:24s} c={c:<3d} {level.pairs_per_s:7.1f} pairs/s  p50 {level.p50_ms:8.1f} ms  "
                  f"p99 {level.p99_ms:8.1f} ms  {row.get('padding_ratio', '')}", file=sys.stderr, flush=True)
        if count:  # overhead: one request at a time; in-process means a direct call, no batching thread
            call = getattr(system, "rerank_direct", call)
            run_count(call, workload.requests, max(3, count // 10), label=f"{name} warm-up")
            result["latencies_ms"] = run_count(call, workload.requests, count, label=f"{name} one at a time")
    result["peak_rss_mib"] = rss.peak_mib
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", required=True, choices=SYSTEMS)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--concurrency", default="1,2,4,8,16,32")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=0, help="sequential calls instead of levels (overhead)")
    parser.add_argument("--options", default="{}", help="JSON: gateway_args, max_batch_tokens, log_dir, ...")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    if options.get("log_dir"):
        options["log_dir"] = Path(options["log_dir"])
    try:
        result = measure(args.system, args.model_dir, Workload.load(args.workload),
                         [int(c) for c in args.concurrency.split(",") if c], args.duration, args.warmup, args.count, options)
    except Exception as exc:
        traceback.print_exc()
        result = {"system": args.system, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    args.out.write_text(json.dumps(result, indent=1))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
