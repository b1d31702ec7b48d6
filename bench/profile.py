"""Where a request's time goes inside the gateway and the model's process: ``python -m bench.profile`` (~1 minute).

Starts the service (the ``tiny`` model, the torch engine, no score cache), sends the overhead benchmark's
10-document requests (bench/overhead.py) from ``--callers`` closed-loop callers (default one, back to back; fresh
queries, so no cache answers), and meanwhile samples the gateway and Triton's Python-backend stub (model.py) with
py-spy, without pausing them (``--nonblocking``), idle threads left out: what each process spends its CPU on per
request. ``--triton-model null`` serves a model.py that computes nothing (bench/gateway_capacity.py's), so that the
gateway's own cost is all there is; ``--gil`` samples only the thread holding the GIL, i.e. the gateway's Python work
(the tokenizer's Rust and gRPC's C threads work without it). tritonserver's own C++ work is not sampled
(bench/overhead.py takes the Triton round trip apart with Triton's counters instead).

Writes ``bench/results/profile-<timestamp>.json`` (per process: samples, the top functions by own time and by time
including callees, as shares of the process's active samples; the gateway's CPU per request from /proc) and prints the
tables; ``--stacks DIR`` also keeps the raw collapsed stacks (``<process>.txt``, for flame graphs). py-spy counts a
thread as active while it runs Python or native code, also while it waits for the GIL or inside an event loop's poll:
shares, not CPU time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ara_reranker_client import AsyncRerankerClient
from bench import results
from bench.gateway_capacity import null_repository, tree_cpu_s
from bench.loadgen import ClosedLoop
from bench.run import prepare_model
from bench.systems import NO_CACHE, ServiceSystem
from bench.workload import make_workload

TOP = 25
# What a sample's own frame (the leaf: py-spy puts native time on the Python frame that called it) was doing, by where
# its code lives: the tokenizer's Rust (the gateway's calls into it), gRPC's and asyncio's machinery (the server's and
# the Triton client's calls, the completion-queue poller thread, the event loop's poll), the gateway's own Python
# (with the numpy, metrics and logging it calls), in that order of test.
TOKENIZER_CALLS = ("PairTokenizer._document_encodings", "PairTokenizer.encode_query", "PairTokenizer.encode_windows",
                   "PairTemplate.of")
MACHINERY = ("grpc/", "asyncio/", "selectors.py", "threading.py", "concurrent/futures/", "queue.py")
GATEWAY = ("ara_reranker_server/", "ara_reranker_model/", "ara_reranker_client/", "numpy/", "prometheus_client/",
           "logging/", "uuid.py", "json/", "google/protobuf/")
PARTS = ("tokenizer (its Rust, through the gateway's calls)", "gRPC and asyncio machinery (server, Triton client, poller, event loop)",
         "the gateway's own Python (with numpy, metrics, logging)", "other")


def part_of(leaf: str) -> str:
    """Which of PARTS the sampled frame ``leaf`` ("name (path:line)") belongs to."""
    name, _, where = leaf.partition(" (")
    if name in TOKENIZER_CALLS:
        return PARTS[0]
    if any(m in where for m in MACHINERY):
        return PARTS[1]
    if any(g in where for g in GATEWAY):
        return PARTS[2]
    return PARTS[3]


def py_spy() -> str:
    """The py-spy executable beside this interpreter (requirements-dev.txt), else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is not installed: pip install py-spy (requirements-dev.txt)")
    return found


def frames(line: str) -> tuple[list[str], int]:
    """One collapsed stack ("frame;frame;... count"): its frames (thread name first) and its sample count."""
    stack, _, count = line.rpartition(" ")
    return stack.split(";"), int(count)


def function(frame: str) -> str:
    """``name (path/to/file.py:line)`` -> ``name (file.py)``: one entry per function, whatever the line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')').rsplit(':', 1)[0]).name})" if where else name


def summarize(collapsed: str) -> dict:
    """Busy samples, and the functions taking most of them: own (the frame sampled) and inclusive (anywhere in it)."""
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    parts: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        if not line.strip():
            continue
        stack, count = frames(line)
        total += count
        own[function(stack[-1])] += count
        parts[part_of(stack[-1])] += count
        for name in {function(f) for f in stack[1:]}:  # frame 0 is the thread
            inclusive[name] += count
    share = lambda counter: [(name, round(100 * n / total, 1)) for name, n in counter.most_common(TOP)]  # noqa: E731
    return {"samples": total, "own_percent": share(own), "inclusive_percent": share(inclusive),
            "parts_percent": {part: round(100 * parts[part] / max(total, 1), 1) for part in PARTS}}


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__, model="tiny", engine="torch")
    parser.add_argument("--docs", type=int, default=10, help="documents per request (1: the smallest request)")
    parser.add_argument("--callers", type=int, default=1, help="concurrent callers, each on its own channel")
    parser.add_argument("--triton-model", choices=("model", "null"), default="model",
                        help="null: Triton computes nothing (bench.gateway_capacity's null model.py): the gateway alone")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (Python's own CPU work)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each process is sampled")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--stacks", type=Path, help="also write the raw collapsed stacks here, one file per process")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    spy = py_spy()
    model_dir = prepare_model(args.model, args.engine == "onnx")
    requests = make_workload(AutoTokenizer.from_pretrained(model_dir), requests=64, docs_per_request=args.docs).requests
    with _service(model_dir, args) as (gateway_pid, stub_pid, target), tempfile.TemporaryDirectory() as tmp:
        processes = {"gateway": gateway_pid}
        if stub_pid is not None:
            processes["model (python backend stub)"] = stub_pid
        load = _load(target, requests, args.callers).start()
        load.wait_ended(4 * args.callers + 20, timeout_s=120, ok_only=True)  # every code path taken before sampling
        outputs = {name: Path(tmp) / f"{i}.txt" for i, name in enumerate(processes)}
        first, cpu_before = load.ended(ok_only=True), tree_cpu_s(gateway_pid)
        started = time.perf_counter()
        spies = [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate",
                                   str(args.rate), "--format", "raw", "--nonblocking", *(["--gil"] if args.gil else []),
                                   "--output", str(outputs[name])],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for name, pid in processes.items()]
        for spy_process in spies:
            _, err = spy_process.communicate(timeout=args.seconds + 120)
            if spy_process.returncode != 0:
                raise SystemExit(f"py-spy failed: {err.strip()[-2000:]}")
        elapsed = time.perf_counter() - started
        requests_sampled, gateway_cpu = load.ended(ok_only=True) - first, tree_cpu_s(gateway_pid) - cpu_before
        load.stop()
        if failed := [o for o in load.outcomes if not o.ok]:  # a failing load would profile a gateway at rest
            raise failed[0].error
        stacks = {name: path.read_text() for name, path in outputs.items()}

    result = {
        "model": args.model, "engine": args.engine, "docs": args.docs, "callers": args.callers,
        "triton_model": args.triton_model, "gil_only": args.gil, "seconds": args.seconds, "rate": args.rate,
        "requests": requests_sampled, "requests_per_s": round(requests_sampled / elapsed, 1),
        "gateway_cpu_ms_per_request": round(1000 * gateway_cpu / max(requests_sampled, 1), 3),
        "processes": {name: summarize(text) for name, text in stacks.items()},
    }
    results.finish("profile", "bench.profile", argv, args, result, markdown)
    if args.stacks:
        args.stacks.mkdir(parents=True, exist_ok=True)
        for name, text in stacks.items():
            (args.stacks / f"{name.split()[0]}.txt").write_text(text)
    return 0


@contextlib.contextmanager
def _service(model_dir: Path, args: argparse.Namespace):
    """The gateway in front of Triton (the real model, or the null one): (gateway pid, model stub pid or None, target)."""
    if args.triton_model == "model":
        with ServiceSystem(model_dir, args.engine, gateway_args=NO_CACHE) as service:
            yield service.gateway.process.pid, service.triton.stub_pids()[0], service.gateway.target
        return
    from ara_reranker_server.launcher.gateway_process import GatewayProcess
    from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer

    with tempfile.TemporaryDirectory() as tmp:
        options = TritonOptions(model_dir=model_dir)
        options.model_repository = null_repository(Path(tmp))
        with TritonServer(options) as triton, \
                GatewayProcess({"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir)} | NO_CACHE) as gateway:
            yield gateway.process.pid, None, gateway.target


def _load(target: str, requests: list, callers: int) -> ClosedLoop:
    """``callers`` closed-loop asyncio callers, each on its own channel, a fresh query each call (no cache)."""
    async def rerank(client: AsyncRerankerClient, n: int) -> None:
        request = requests[n % len(requests)]
        await client.rerank(f"{request.query} {n}", request.documents)

    return ClosedLoop(rerank, callers, session=lambda: AsyncRerankerClient(target, timeout=60))


def markdown(result: dict) -> str:
    rows = [f"{result['requests']} requests of {result['docs']} documents, {result['requests_per_s']}/s, "
            f"{result.get('callers', 1)} caller(s) ({result['model']} model, {result.get('triton_model', 'model')} Triton model); "
            f"gateway CPU {result.get('gateway_cpu_ms_per_request', 'n/a')} ms per request"
            + ("; samples only while holding the GIL" if result.get("gil_only") else ""), ""]
    gateway = result["processes"].get("gateway", {})
    if "parts_percent" in gateway:
        cpu = result.get("gateway_cpu_ms_per_request")
        rows += ["| the gateway's active samples, by part | % | ≈ ms of its CPU per request |", "|---|---:|---:|"]
        rows += [f"| {part} | {pct} | {round(pct * cpu / 100, 2) if cpu else 'n/a'} |" for part, pct in gateway["parts_percent"].items()]
        rows.append("")
    for name, profile in result["processes"].items():
        ms_per_sample = 1000 / result["rate"]
        per_request = profile["samples"] * ms_per_sample / max(result["requests"], 1)
        rows += [f"### {name}: {profile['samples']} active samples, ~{per_request:.2f} ms active per request", "",
                 "| function (own time) | % | function (inclusive) | % |", "|---|---:|---|---:|"]
        for (a, pa), (b, pb) in zip(profile["own_percent"], profile["inclusive_percent"]):
            rows.append(f"| {a} | {pa} | {b} | {pb} |")
        rows.append("")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
