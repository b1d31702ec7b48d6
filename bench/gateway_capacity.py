"""One gateway process's capacity, per core: ``python -m bench.gateway_capacity`` (about 3 minutes on 2 cores).

How many (query, document) pairs and requests per second one gateway process can tokenize and forward,
with a model so cheap that Triton is not the bottleneck. The gateway's work (validate, tokenize, pad,
send to Triton, rank, answer) does not depend on the model's size, only on the tokenizer and the
lengths, so the figures carry over to the real model (the ``tiny`` model directory has the real
XLM-R tokenizer).

On 2 CPU cores even ``tiny`` (2 layers x 64) is too slow: Triton on one core scores ~350-420 pairs/s
of this workload, below what the gateway's core can prepare. So by default (``--triton-model null``)
Triton serves the project's model configuration (same inputs, outputs, dynamic batcher, Python
backend) with a ``model.py`` that answers zeros without computing anything: the gateway does all of
its real work and Triton costs only its own request handling. ``--triton-model tiny`` serves the real
tiny model instead.

Placement: the gateway is pinned to ``--gateway-core`` (``taskset -c``); Triton, this script and the
load generator share ``--other-cores``. The load generator is a separate process
(bench/loadgen.py's ClosedLoop: ``c`` asyncio callers in a closed loop, each on its own AsyncRerankerClient channel).

Per level (workload x concurrency): after a warm-up in which every caller has had an answer, a window
of ``--seconds`` in which are read

* completed requests and pairs (answers inside the window / its length), and Little's law
  (concurrency / mean latency) as bench/loadgen.py does;
* the gateway's CPU seconds (``/proc/<pid>/stat`` utime + stime): pairs per CPU-second is the figure
  an operator sizes with, independent of how busy the other core was;
* Triton's share: its process tree's CPU seconds, and its model's compute time from its metrics
  (``nv_inference_compute_infer_duration_us``, counted once per execution) over the window.

Then Triton alone: the same requests, tokenized beforehand exactly as the gateway does, sent straight
to Triton (tritonclient's aio client) from a process on the gateway's core, to show what Triton can take.

Workloads: ``mixed`` (the benchmark's: 10 documents of 20-400 tokens) and ``small`` (10 documents of
about 128 tokens). Writes ``bench/results/gateway-capacity-<timestamp>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import loadgen, prometheus, results
from bench.loadgen import ClosedLoop, Outcome
from bench.repository import edited_copy
from bench.results import PROJECT_ROOT
from bench.systems import NO_CACHE
from bench.workload import Workload, make_workload

CLK_TCK = os.sysconf("SC_CLK_TCK")
NULL_MODEL_PY = '''"""Benchmark stand-in (bench/gateway_capacity.py): zeros for every row, no compute."""
import os
import site
import sys

# The stub's interpreter ignores PYTHONPATH (the launcher's virtualenv): honour it, as the real model.py does.
for _path in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _path not in sys.path:
        sys.path.insert(0, _path)
        site.addsitedir(_path)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().shape[0]
            logits = pb_utils.Tensor("logits", np.zeros((rows, 1), dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[logits]))
        return responses
'''
TRITON_COUNTERS = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count",
                   "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                   "nv_inference_compute_infer_duration_us")


# ---------------------------------------------------------------- probes (read in the driver process)

def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (Triton's Python-backend stubs are its children)."""
    import psutil

    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(pid: int) -> float:
    total = 0.0
    for p in tree_pids(pid):
        try:
            total += proc_cpu_s(p)
        except OSError:
            pass
    return total


def triton_counters(url: str) -> dict[str, float]:
    """Triton's cumulative per-model counters, summed over models and versions."""
    page = prometheus.scrape(url)
    return {name: page.value(name) for name in TRITON_COUNTERS}


class Probe:
    def __init__(self, gateway_pid: int | None, triton_pid: int, triton_metrics: str) -> None:
        self.gateway_pid, self.triton_pid, self.triton_metrics = gateway_pid, triton_pid, triton_metrics

    def read(self) -> dict:
        own = os.times()
        # The gateway's process tree: with workers > 1 the work is in its children.
        return {"t": time.perf_counter(), "gateway_cpu_s": tree_cpu_s(self.gateway_pid) if self.gateway_pid else 0.0,
                "triton_cpu_s": tree_cpu_s(self.triton_pid), "driver_cpu_s": own.user + own.system,
                "triton": triton_counters(self.triton_metrics)}


# ---------------------------------------------------------------- the closed loop (driver process)

def level(call, requests: list, concurrency: int, warmup_s: float, seconds: float, probe: Probe, **sessions) -> dict:
    """``concurrency`` asyncio callers (bench.loadgen's ClosedLoop; ``sessions``: its ``session`` and
    ``shared_session``), each sending the next request (``call(session, request)``: its pairs) as soon as its last is
    answered: after the warm-up (every caller answered, ``warmup_s`` at least), one window of ``seconds``: its row."""
    async def send(session, n: int) -> int:
        return await call(session, requests[n % len(requests)])

    calls = ClosedLoop(send, concurrency, pause_after_error_s=0.05, **sessions).start()
    try:
        calls.wait_warm(timeout_s=120, min_s=warmup_s)
        before = probe.read()
        time.sleep(seconds)
        after = probe.read()
    finally:
        calls.stop(timeout_s=180)  # the calls in flight end within the clients' timeout (120 s)
    return summarise(calls.outcomes, concurrency, before, after)


def summarise(outcomes: list[Outcome], concurrency: int, before: dict, after: dict) -> dict:
    start, end = before["t"], after["t"]
    window = end - start
    calls = loadgen.summarise(outcomes, concurrency, start, end)
    gateway_cpu = after["gateway_cpu_s"] - before["gateway_cpu_s"]
    triton_cpu = after["triton_cpu_s"] - before["triton_cpu_s"]
    driver_cpu = after["driver_cpu_s"] - before["driver_cpu_s"]
    d = {k: after["triton"][k] - before["triton"][k] for k in TRITON_COUNTERS}
    # Triton adds an execution's compute time to every request in it: per execution it is counted once.
    per_request_compute_us = d["nv_inference_compute_infer_duration_us"] / max(d["nv_inference_request_success"], 1)
    compute_busy_s = per_request_compute_us * d["nv_inference_exec_count"] / 1e6
    row = {
        "concurrency": concurrency, "window_s": round(window, 2), "requests": calls.requests, "pairs": calls.pairs,
        "requests_per_s": round(calls.requests / window, 2), "pairs_per_s": round(calls.window_pairs_per_s, 1),
        "little_pairs_per_s": round(calls.pairs_per_s, 1), "p50_ms": round(calls.p50_ms, 2), "p99_ms": round(calls.p99_ms, 2),
        "errors": calls.errors, "first_error": calls.first_error,
        "gateway_cpu_s": round(gateway_cpu, 3), "gateway_core_busy": round(gateway_cpu / window, 3),
        "triton_cpu_busy": round(triton_cpu / window, 3), "driver_cpu_busy": round(driver_cpu / window, 3),
        "triton_requests": int(d["nv_inference_request_success"]), "triton_executions": int(d["nv_inference_exec_count"]),
        "triton_compute_busy": round(compute_busy_s / window, 3),
        "triton_compute_ms_per_request": round(per_request_compute_us / 1000, 3),
        "triton_queue_ms_per_request": round(d["nv_inference_queue_duration_us"] / max(d["nv_inference_request_success"], 1) / 1000, 3),
    }
    if gateway_cpu > 0 and calls.pairs:
        row.update({"pairs_per_gateway_cpu_s": round(calls.pairs / gateway_cpu, 1),
                    "requests_per_gateway_cpu_s": round(calls.requests / gateway_cpu, 2),
                    "gateway_cpu_s_per_1000_pairs": round(1000 * gateway_cpu / calls.pairs, 3)})
    return row


def triton_level(url: str, model: str, prepared: list, concurrency: int, warmup_s: float, seconds: float,
                 probe: Probe) -> dict:
    """``level`` straight to Triton: requests prepared as the gateway sends them (each a list of its chunks' token
    arrays), sent by one tritonclient aio client that the callers share, as the gateway's calls share its channel."""
    import tritonclient.grpc.aio as triton_aio

    from bench.triton_direct import infer_chunks

    async def call(client, chunks) -> int:
        return await infer_chunks(client, model, chunks)

    return level(call, prepared, concurrency, warmup_s, seconds, probe,
                 session=lambda: triton_aio.InferenceServerClient(url), shared_session=True)


def levels(kind: str, workloads: dict[str, list], spec: dict, shown, measure) -> list[dict]:
    """``measure(requests, concurrency)`` (a ``level``) at each concurrency of ``spec`` on each workload, a row each,
    printed as it comes."""
    rows = []
    for name, requests in workloads.items():
        for c in spec["concurrency"]:
            row = {"workload": name, **measure(requests, c)}
            print(f"  {kind:8s} {name:5s} c={c:<3d} {row['pairs_per_s']:8.1f} pairs/s  {shown(row)}", flush=True)
            rows.append(row)
    return rows


def drive_gateway(spec: dict) -> list[dict]:
    from ara_reranker_client import AsyncRerankerClient

    probe = Probe(spec["gateway_pid"], spec["triton_pid"], spec["triton_metrics"])

    async def call(client, request) -> int:
        await client.rerank(request.query, request.documents)
        return len(request.documents)

    workloads = {name: Workload.load(Path(path)).requests for name, path in spec["workloads"].items()}
    # A connection stays with the gateway worker it reached: one channel per caller lets them spread over workers.
    return levels("gateway", workloads, spec,
                  lambda row: f"gateway core {row['gateway_core_busy']:.2f}  "
                              f"{row.get('pairs_per_gateway_cpu_s', 0):7.1f} pairs/CPU-s",
                  lambda requests, c: level(call, requests, c, spec["warmup_s"], spec["seconds"], probe,
                                            session=lambda: AsyncRerankerClient(spec["target"], timeout=120)))


def drive_triton(spec: dict) -> list[dict]:
    """The same requests, tokenized and chunked as the gateway does, straight to Triton (``triton_level``)."""
    from ara_reranker_model.inputs import padded_rows
    from ara_reranker_server.models import load_tokenizer

    tokenizer = load_tokenizer(spec["model_dir"], 0, 1)
    probe = Probe(None, spec["triton_pid"], spec["triton_metrics"])

    def chunks(request) -> list[tuple[np.ndarray, np.ndarray]]:
        ids, _ = tokenizer.encode(request.query, request.documents, True)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        size = spec["chunk_size"]
        return [padded_rows([ids[i] for i in order[a : a + size]], tokenizer.pad_id) for a in range(0, len(order), size)]

    workloads = {name: [chunks(r) for r in Workload.load(Path(path)).requests] for name, path in spec["workloads"].items()}
    tokenizer.close()
    return levels("triton", workloads, spec,
                  lambda row: f"Triton CPU {row['triton_cpu_busy']:.2f}  compute {row['triton_compute_busy']:.2f}",
                  lambda prepared, c: triton_level(spec["triton_url"], spec["triton_model"], prepared, c, spec["warmup_s"],
                                                   spec["seconds"], probe))


def drive(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    rows = drive_gateway(spec) if spec["kind"] == "gateway" else drive_triton(spec)
    Path(spec["out"]).write_text(json.dumps(rows))
    return 0


# ---------------------------------------------------------------- the orchestrator

def run_driver(spec: dict, cores: str, tmp: Path) -> list[dict]:
    spec_path, out = tmp / f"spec-{spec['kind']}.json", tmp / f"out-{spec['kind']}.json"
    spec["out"] = str(out)
    spec_path.write_text(json.dumps(spec))
    command = ["taskset", "-c", cores, sys.executable, "-m", "bench.gateway_capacity", "--drive", str(spec_path)]
    code = subprocess.run(command, cwd=PROJECT_ROOT).returncode
    if code != 0 or not out.exists():
        raise RuntimeError(f"{spec['kind']} driver exited with {code}")
    return json.loads(out.read_text())


def null_repository(tmp: Path) -> Path:
    """A copy of the project's model repository whose model.py answers zeros (its configurations unchanged)."""
    return edited_copy(tmp / "null", model_py=NULL_MODEL_PY)


def pair_tokens(model_dir: Path, workload: Workload) -> dict:
    """Tokens per (query, document) pair as the gateway makes them (special tokens included)."""
    from ara_reranker_server.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir), 0, 1)
    lengths = [len(ids) for r in workload.requests for ids in tokenizer.encode(r.query, r.documents, True)[0]]
    tokenizer.close()
    return {"mean": round(float(np.mean(lengths)), 1), "p50": float(np.median(lengths)), "max": int(np.max(lengths))}


def tokenizer_floor(model_dir: Path, workload: Workload, core: int, seconds: float = 3.0, repeats: int = 3) -> dict:
    """The tokenizer's own cost on the workload's pairs, the floor of the gateway's: ``tokenizer(queries, documents)``
    (transformers' fast tokenizer, documents truncated to the model's length) one request at a time on one thread, on
    the gateway's own ``core`` (cores of one machine differ, and so does one core from minute to minute): ``repeats``
    spells of at least ``seconds`` of this thread's CPU time each; pairs per CPU-second, their median and range."""
    from transformers import AutoTokenizer

    # One thread: without this the tokenizers library encodes a batch on a thread pool of its own, whose CPU time
    # this thread's clock would not see. (The gateway sets the same.)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_length = int(tokenizer.model_max_length)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        spells = []
        for _ in range(repeats):
            pairs = 0
            started, process_started = time.thread_time(), time.process_time()
            while time.thread_time() - started < seconds:
                for r in workload.requests:
                    tokenizer([r.query] * len(r.documents), list(r.documents), truncation="only_second", max_length=max_length)
                    pairs += len(r.documents)
            cpu = time.thread_time() - started
            if time.process_time() - process_started > 1.2 * cpu:  # another thread worked for it: the figure would lie
                raise RuntimeError("the tokenizer used more than one thread; set TOKENIZERS_PARALLELISM=false before it is loaded")
            spells.append(pairs / cpu)
    finally:
        os.sched_setaffinity(0, affinity)
    return {"pairs_per_cpu_s": round(float(np.median(spells)), 1), "spells_pairs_per_cpu_s": [round(x, 1) for x in spells],
            "core": core, "seconds_per_spell": seconds,
            "recipe": "AutoTokenizer(...)([query] * n, documents, truncation='only_second', max_length=model_max_length), one thread"}


def pooled(rows: list[dict], workload: str) -> dict:
    """Gateway figures of one workload over all its levels: pairs and requests per gateway CPU-second
    (all windows pooled), and the highest throughput seen with the gateway on one core."""
    mine = [r for r in rows if r["workload"] == workload]
    pairs, requests, cpu = (sum(r[k] for r in mine) for k in ("pairs", "requests", "gateway_cpu_s"))
    best = max(mine, key=lambda r: r["pairs_per_s"])
    return {"pairs_per_gateway_cpu_s": round(pairs / cpu, 1), "requests_per_gateway_cpu_s": round(requests / cpu, 2),
            "gateway_cpu_s_per_1000_pairs": round(1000 * cpu / pairs, 3),
            "gateway_cpu_ms_per_request": round(1000 * cpu / requests, 3),
            "best_pairs_per_s": best["pairs_per_s"], "best_requests_per_s": best["requests_per_s"],
            "best_at_concurrency": best["concurrency"], "gateway_core_busy_at_best": best["gateway_core_busy"],
            "triton_compute_busy_at_best": best["triton_compute_busy"], "triton_cpu_busy_at_best": best["triton_cpu_busy"]}


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--model", default="tiny", help="model directory: its tokenizer (and weights with --triton-model tiny)")
    parser.add_argument("--triton-model", choices=("null", "tiny"), default="null",
                        help="null: the project's Triton configuration with a model.py that computes nothing; tiny: the real model")
    parser.add_argument("--concurrency", default="4,16,32")
    parser.add_argument("--triton-concurrency", default="16")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up per level (at least one answer per caller)")
    parser.add_argument("--requests", type=int, default=96, help="requests per workload")
    parser.add_argument("--gateway-core", default="0", help="cores the gateway runs on (taskset list, e.g. 0 or 0,1)")
    parser.add_argument("--workers", default="1",
                        help="gateway worker processes (the workers setting); a list (1,2,4) measures each in turn, on the "
                             "first N of --gateway-core's cores, at N times each --concurrency level")
    parser.add_argument("--workloads", default="mixed,small,mixed-100", help="which workloads to measure")
    parser.add_argument("--other-cores", default="1", help="Triton, this script and the load generator")
    parser.add_argument("--skip-triton-alone", action="store_true")
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # internal: run a load generator from a spec file
    args = parser.parse_args(argv)
    if args.drive:
        return drive(args.drive)

    other = set(_cores(args.other_cores))
    worker_counts = [int(w) for w in args.workers.split(",")]
    gateway_cores = _cores(args.gateway_core)
    if max(worker_counts) > len(gateway_cores):
        parser.error(f"--workers {max(worker_counts)} needs as many --gateway-core cores (got {args.gateway_core})")
    os.sched_setaffinity(0, other)  # before any thread or child: Triton inherits it
    from transformers import AutoTokenizer

    from ara_reranker_model.store import prepare
    from ara_reranker_server.launcher.gateway_process import GatewayProcess
    from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer

    model_dir = prepare(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    makers = {
        "mixed": lambda: make_workload(tokenizer, requests=args.requests),
        "small": lambda: make_workload(tokenizer, requests=args.requests, min_tokens=112, max_tokens=144, median_tokens=128.0),
        "mixed-100": lambda: make_workload(tokenizer, requests=max(8, args.requests // 8), docs_per_request=100),
    }
    workloads = {name: makers[name]() for name in args.workloads.split(",")}
    concurrency = [int(c) for c in args.concurrency.split(",")]
    result: dict = {
        "model": args.model,
        "gateway_workers": worker_counts,
        "placement": {"gateway_core": args.gateway_core, "other_cores": args.other_cores,
                      "note": "gateway alone on gateway_core (taskset); Triton, the orchestrator and the load "
                              "generator share other_cores; Triton alone is driven from gateway_core"},
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2), "triton_model": args.triton_model, "seconds": args.seconds, "warmup_s": args.warmup, "chunk_size": 32,
        "workloads": {name: {**w.summary(), "pair_tokens": pair_tokens(model_dir, w), "tokenizer_floor": tokenizer_floor(model_dir, w, _cores(args.gateway_core)[0])}
                      for name, w in workloads.items()},
    }
    with tempfile.TemporaryDirectory(prefix="gateway-capacity-") as tmp_name:
        tmp = Path(tmp_name)
        paths = {}
        for name, w in workloads.items():
            paths[name] = str(tmp / f"workload-{name}.json")
            w.save(Path(paths[name]))
        options = TritonOptions(model_dir=model_dir)
        if args.triton_model == "null":
            options.model_repository = null_repository(tmp)
        with TritonServer(options) as triton:
            common = {"triton_pid": triton.process.pid, "triton_metrics": triton.metrics_url, "workloads": paths,
                      "loadavg_1m_at_start": round(os.getloadavg()[0], 2), "triton_model": args.triton_model, "seconds": args.seconds, "warmup_s": args.warmup}
            if not args.skip_triton_alone:
                print(f"Triton alone (client on core {args.gateway_core}, Triton on {args.other_cores})", flush=True)
                result["triton_alone"] = run_driver({
                    **common, "kind": "triton", "triton_url": triton.grpc_url, "triton_model": triton.model_names[0],
                    "model_dir": str(model_dir), "chunk_size": 32,
                    "concurrency": [int(c) for c in args.triton_concurrency.split(",")]}, args.gateway_core, tmp)
            result["gateway"] = []
            for workers in worker_counts:
                cores = ",".join(map(str, gateway_cores[:workers]))
                gateway_args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir), "workers": str(workers)}
                # taskset execs the gateway: the pid is the gateway's (its workers are its children).
                with GatewayProcess(gateway_args | NO_CACHE, launcher=("taskset", "-c", cores)) as gateway:
                    print(f"gateway of {workers} worker(s) pinned to cores {cores} (pid {gateway.process.pid}); load generator "
                          f"and Triton on {args.other_cores}", flush=True)
                    rows = run_driver({**common, "kind": "gateway", "target": gateway.target, "gateway_pid": gateway.process.pid,
                                       "concurrency": [c * workers for c in concurrency]}, args.other_cores, tmp)
                result["gateway"] += [{**row, "workers": workers} for row in rows]
    result["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)  # > 2 on 2 cores: something else ran too
    if len(worker_counts) > 1:
        result["scaling"] = {str(w): {name: pooled([r for r in result["gateway"] if r["workers"] == w], name) for name in workloads}
                             for w in worker_counts}
    first = [r for r in result["gateway"] if r["workers"] == worker_counts[0]]
    result["summary"] = {name: pooled(first, name) for name in workloads}
    for name, s in result["summary"].items():
        s["gateway_cpu_us_per_token"] = round(s["gateway_cpu_s_per_1000_pairs"] * 1000 / result["workloads"][name]["pair_tokens"]["mean"], 3)
        floor = result["workloads"][name]["tokenizer_floor"]
        s["gateway_over_tokenizer_floor"] = round(s["pairs_per_gateway_cpu_s"] / floor["pairs_per_cpu_s"], 3)
    print_table(result)
    for workers, by_workload in result.get("scaling", {}).items():
        print(f"{workers} worker(s): " + "; ".join(f"{name} best {s['best_pairs_per_s']} pairs/s, {s['pairs_per_gateway_cpu_s']} "
                                                  f"pairs/CPU-s" for name, s in by_workload.items()))
    results.finish("gateway-capacity", "bench.gateway_capacity", argv, args, result)
    return 0


def _cores(spec: str) -> list[int]:
    """A taskset core list ("0", "0,1", "0-7,12") as core numbers, in order."""
    out: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


def print_table(result: dict) -> None:
    print("\nwhat  workload  c   req/s  pairs/s  p50 ms  p99 ms  gw core  pairs/gw-CPU-s  gw CPU-s/1000 pairs  Triton CPU  Triton compute  client CPU  errors")
    for kind in ("gateway", "triton_alone"):
        for r in result.get(kind, []):
            print(f"{'gw' + str(r['workers']) if kind == 'gateway' else 'trt':4s}  {r['workload']:8s} {r['concurrency']:3d} {r['requests_per_s']:7.1f} {r['pairs_per_s']:8.1f}"
                  f" {r['p50_ms']:7.1f} {r['p99_ms']:7.1f} {r['gateway_core_busy']:8.2f} {r.get('pairs_per_gateway_cpu_s', 0):15.1f}"
                  f" {r.get('gateway_cpu_s_per_1000_pairs', 0):20.3f} {r['triton_cpu_busy']:11.2f} {r['triton_compute_busy']:15.2f}"
                  f" {r['driver_cpu_busy']:11.2f} {r['errors']:7d}")
    print()
    for name, s in result["summary"].items():
        tokens = result["workloads"][name]["pair_tokens"]["mean"]
        print(f"{name} ({tokens} tokens/pair): {s['pairs_per_gateway_cpu_s']} pairs and {s['requests_per_gateway_cpu_s']} requests "
              f"per gateway CPU-second ({s['gateway_cpu_s_per_1000_pairs']} CPU-s per 1000 pairs, {s['gateway_cpu_us_per_token']} CPU-us "
              f"per token; {s['gateway_over_tokenizer_floor']:.0%} of the tokenizer alone, "
              f"{result['workloads'][name]['tokenizer_floor']['pairs_per_cpu_s']} pairs/CPU-s); "
              f"best {s['best_pairs_per_s']} pairs/s at c={s['best_at_concurrency']} with the gateway core "
              f"{s['gateway_core_busy_at_best']:.0%} busy, Triton computing {s['triton_compute_busy_at_best']:.0%} of the time")


if __name__ == "__main__":
    raise SystemExit(main())
