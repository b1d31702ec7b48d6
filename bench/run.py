"""The benchmark: every system, one at a time, on the same machine, model directory and workload.

    make bench                 # python -m bench.run --model small   (about 28 minutes on 2 cores)
    make bench-smoke           # python -m bench.run --smoke         (tiny model, seconds; CI runs it)

Systems (``--systems``, default all that can run here): the in-process limit on each engine
(``limit-torch``, ``limit-onnx``), sentence-transformers' ``CrossEncoder.predict`` (batch 32), Infinity
with its torch and optimum engines (when ``make bench-infinity`` has built its virtualenv), and this
service (gateway + Triton) on the onnx engine. Each runs in its own process (bench/worker.py) at client
concurrency 1, 2, 4, 8, 16, 32; then the gateway + Triton overhead is measured on the tiny model.

Writes ``bench/results/<timestamp>.json``, ``.md`` and ``.png`` (and ``latest.*`` copies).
The offline models have random weights: their rankings mean nothing, but their shapes, tokenizer and
compute are the real model's, so the speed figures are real.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report, results
from bench.infinity import DEFAULT_BATCH_SIZE as INFINITY_BATCH_SIZE
from bench.results import PROJECT_ROOT, RESULTS
from bench.stats import p50_p99_ms
from bench.worker import SYSTEMS
from bench.workload import SHAPES, make_workload

DEFAULT_SYSTEMS = ("limit-torch", "limit-onnx", "sentence-transformers", "infinity-torch", "infinity-optimum", "service-onnx")
OVERHEAD_DOCS = 10  # the overhead target is stated for one request of 10 documents
SMOKE_SYSTEMS = ("limit-onnx", "sentence-transformers", "service-onnx")


def prepare_model(model: str, needs_onnx: bool) -> Path:
    from ara_reranker_model.store import prepare

    model_dir = prepare(model)
    if needs_onnx:
        from ara_reranker_model.onnx_export import export_onnx

        export_onnx(model_dir)
    return model_dir


def _run_worker(system: str, model_dir: Path, workload_path: Path, args, options: dict, out: Path,
                count: int = 0, concurrency: str | None = None) -> dict:
    concurrency = args.concurrency if concurrency is None else concurrency
    command = [sys.executable, "-m", "bench.worker", "--system", system, "--model-dir", str(model_dir),
               "--workload", str(workload_path), "--concurrency", concurrency, "--duration", str(args.duration),
               "--warmup", str(args.warmup), "--count", str(count), "--options", json.dumps(options), "--out", str(out)]
    started = time.perf_counter()
    # The worker's progress bars and per-level lines go straight to this terminal.
    code = subprocess.run(command, cwd=PROJECT_ROOT).returncode
    try:
        result = json.loads(out.read_text())
    except (OSError, ValueError):
        result = {"system": system, "error": f"worker exited with {code} and wrote no result"}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def _overhead_pair(args) -> tuple[str, str]:
    return f"limit-{args.overhead_engine}", f"service-{args.overhead_engine}"


def _overhead_inline(args, systems: list[str]) -> bool:
    """Whether the main run's own workers can take the overhead calls (same model, 10 documents)."""
    return args.overhead_model == args.model and args.docs == OVERHEAD_DOCS and set(_overhead_pair(args)) <= set(systems)


def _overhead(args, tmp: Path, options: dict, run: dict) -> dict:
    """Gateway + Triton latency over a direct in-process call (tokenize + forward), one request of 10
    documents at a time, same engine, same model."""
    out: dict = {"model": args.overhead_model, "engine": args.overhead_engine, "docs": OVERHEAD_DOCS, "count": args.overhead_count}
    results = {s["system"]: s for s in run["systems"]}
    if not _overhead_inline(args, list(results)):
        from transformers import AutoTokenizer

        model_dir = prepare_model(args.overhead_model, args.overhead_engine == "onnx")
        workload = make_workload(AutoTokenizer.from_pretrained(model_dir), seed=args.seed, requests=32, docs_per_request=OVERHEAD_DOCS)
        workload.save(path := tmp / "overhead-workload.json")
        for system in _overhead_pair(args):
            print(f"\n== overhead: {system} on {args.overhead_model}", file=sys.stderr, flush=True)
            results[system] = _run_worker(system, model_dir, path, args, options, tmp / f"overhead-{system}.json",
                                          count=args.overhead_count, concurrency="")
    for key, system in zip(("in_process", "service"), _overhead_pair(args)):
        result = results[system]
        latencies = result.pop("latencies_ms", None)
        if not latencies:
            out[f"{key}_error"] = result.get("error", "no latencies")
            continue
        out |= p50_p99_ms(latencies, prefix=f"{key}_")
    if "in_process_p50_ms" in out and "service_p50_ms" in out:
        out["p50_overhead_ms"] = round(out["service_p50_ms"] - out["in_process_p50_ms"], 3)
    return out


def _systems(args) -> list[str]:
    from bench import infinity

    wanted = [s.strip() for s in args.systems.split(",")] if args.systems else list(SMOKE_SYSTEMS if args.smoke else DEFAULT_SYSTEMS)
    unknown = [s for s in wanted if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    if not infinity.available() and any(s.startswith("infinity-") for s in wanted):
        print(f"note: {infinity.INFINITY_VENV} is missing (make bench-infinity): Infinity is not measured", file=sys.stderr)
        wanted = [s for s in wanted if not s.startswith("infinity-")]
    return wanted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small", help="tiny | small | large (offline models) or a model directory")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run on the tiny model (CI)")
    parser.add_argument("--systems", default="", help=f"comma-separated, from: {', '.join(SYSTEMS)}")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32")
    parser.add_argument("--duration", type=float, default=15.0,
                        help="shortest measurement window per level, seconds (three ramps if longer, at most 60 s)")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up before the first level, seconds")
    parser.add_argument("--workload", default="mixed", choices=sorted(SHAPES),
                        help="mixed (the main run), uniform-128 / uniform-512 (passages of ~128 / ~512 tokens) or long "
                             "(pages of 1,500-4,000 tokens); any but mixed is written as workload-<name>-<timestamp>.*")
    parser.add_argument("--side-run", action="store_true",
                        help="a run for the workloads table (make bench): written as workload-<name>-<timestamp>.* even "
                             "for mixed, never as latest.*")
    parser.add_argument("--docs", type=int, default=None, help="documents per request (default: the workload's; mixed: 10)")
    parser.add_argument("--requests", type=int, default=96, help="distinct requests in the workload")
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--overhead-model", default="tiny")
    parser.add_argument("--overhead-engine", default="onnx")
    parser.add_argument("--overhead-count", type=int, default=300, help="calls per system in the overhead measurement (0: skip)")
    parser.add_argument("--gateway-arg", action="append", default=[], metavar="KEY=VALUE", help="extra gateway flag, e.g. chunk_size=16")
    parser.add_argument("--infinity-batch-size", type=int, default=INFINITY_BATCH_SIZE,
                        help="Infinity's --batch-size (pairs per forward pass; default: its own). It has no token budget: "
                             "long pairs need a smaller one to fit in memory")
    parser.add_argument("--out-dir", type=Path, default=None, help="default bench/results (smoke: bench/results/smoke)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.concurrency, args.duration, args.warmup = "tiny", "1,4", 1.0, 0.3
        args.docs, args.requests, args.overhead_count = OVERHEAD_DOCS, 16, min(args.overhead_count, 20)
    out_dir = args.out_dir or (RESULTS / "smoke" if args.smoke else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    systems = _systems(args)
    options = {"gateway_args": dict(kv.split("=", 1) for kv in args.gateway_arg), "infinity_batch_size": args.infinity_batch_size}

    from transformers import AutoTokenizer

    model_dir = prepare_model(args.model, any(s.endswith("onnx") for s in systems))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    shape = dict(SHAPES[args.workload])
    args.docs = args.docs or shape.pop("docs_per_request", OVERHEAD_DOCS)
    shape.pop("docs_per_request", None)
    workload = make_workload(tokenizer, seed=args.seed, requests=args.requests, docs_per_request=args.docs, **shape)
    side = args.side_run or args.workload != "mixed"
    stamp = f"workload-{args.workload}-{time.strftime('%Y%m%d-%H%M%S')}" if side else time.strftime("%Y%m%d-%H%M%S")
    command = results.command_line("bench.run", argv)
    run = {
        "meta": {"timestamp": stamp, "model": args.model, "model_dir": str(model_dir), "max_length": int(tokenizer.model_max_length),
                 "model_note": "offline: real XLM-R tokenizer and shapes, random weights" if (model_dir / "OFFLINE_RANDOM_WEIGHTS.txt").exists() else "real weights",
                 "concurrency": [int(c) for c in args.concurrency.split(",")], "duration_s": args.duration},
        "workload": workload.summary() | {"name": args.workload, "side_run": side},
        "systems": [],
    }
    print(f"benchmark: {args.model} ({model_dir}); systems {', '.join(systems)}; workload {workload.summary()}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        workload_path = tmp / "workload.json"
        workload.save(workload_path)
        options["log_dir"] = str(out_dir / "logs")
        inline = args.overhead_count and _overhead_inline(args, systems)
        for system in systems:
            print(f"\n== {system}", file=sys.stderr, flush=True)
            count = args.overhead_count if inline and system in _overhead_pair(args) else 0
            run["systems"].append(_run_worker(system, model_dir, workload_path, args, options, tmp / f"{system}.json", count=count))
        if args.overhead_count:
            run["overhead"] = _overhead(args, tmp, options, run)
    run["targets"] = report.targets(run)
    result = results.envelope("workload-" + args.workload if side else "run", command, run)
    paths = _write(result, out_dir, stamp)
    print("\n" + report.markdown(result), flush=True)
    print("wrote " + ", ".join(str(p) for p in paths), flush=True)
    return 0 if all("error" not in s for s in run["systems"]) else 1


def _write(result: dict, out_dir: Path, stamp: str) -> list[Path]:
    """``<stamp>.json/.md/.png``; the main (mixed) workload's also as ``latest.*``."""
    json_path, md_path, png_path = (out_dir / f"{stamp}.{ext}" for ext in ("json", "md", "png"))
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(report.markdown(result))
    report.plot(result, png_path)
    if result["kind"] == "run":
        for path in (json_path, md_path, png_path):
            shutil.copyfile(path, out_dir / f"latest{path.suffix}")
    return [json_path, md_path, png_path]


if __name__ == "__main__":
    sys.exit(main())
