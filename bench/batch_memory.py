"""Memory of one mifrom bench import results
cro-batch at the token budget: ``python -m bench.batch_memory`` (tiny and small: about
30 minutes on 2 cores; each ``large`` pass takes about 5 minutes there, so choose its shapes: ``--large-shapes``).

1. Per model (``--models``, default tiny, small, large: offline random-weight models of the real shapes,
   built by ``ara_reranker_model.store`` when absent) and per micro-batch shape ``rows x length`` at the
   CPU budget (8,192 tokens: 1x8192 ... 64x128) and at the GPU budget (16,384: 2x8192 ...), a fresh child
   process loads the torch engine as model.py does on CPU (float32, ``--threads`` intra-op threads, the
   same 2x16 warm-up), reads its RSS, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs
   one forward pass of that shape and reads the peak (``VmHWM``). ``activation`` = peak - loaded: what
   one micro-batch of that shape adds. Shapes ending in ``p`` have their last row shorter: with a mask
   that is not all ones transformers builds a float rows x length x length attention mask, which a
   one-row (never padded) micro-batch does without. Also recorded: the attention implementation
   transformers chose (``config._attn_implementation``: ``eager`` holds rows x heads x length^2 scores
   per layer, ``sdpa`` need not), the load and forward times. A shape whose estimated peak exceeds the
   memory available now is skipped and said so.
2. Per model of ``--triton`` (default tiny, small): a real tritonserver with the CPU configuration
   (configs/cpu.pbtxt: budget 8,192, one forward worker per core) under two loads: ``--documents`` long
   documents through the gateway, each cut to the model's 8,192 tokens (1x8192 micro-batches, the
   workers side by side), then ``--padded-rows`` rows of 4,081-4,096 tokens straight to Triton (padded
   2x4096 micro-batches). The summed RSS of tritonserver and its Python-backend stub is sampled every
   20 ms (bench/memory.py's PeakRss); the stub's own peak is its ``VmHWM``, reset before each load.

From both: Triton container peak ~= tritonserver + loaded stub + forward_workers x activation(worst
micro-batch within the budget). Writes ``bench/results/batch-memory-<timestamp>.json`` (the exact command
in ``meta``) and prints a table. Random weights: the scores mean nothing, the shapes and so the memory are
the real model's. float32 on CPU only: float16 on a GPU is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import results

CPU_BUDGET, GPU_BUDGET = 8192, 16384
# Micro-batches at each budget, rows x length; "p": the last row shorter, so the attention mask is not all ones
# (transformers then builds a rows x length x length mask; a one-row micro-batch is never padded).
CPU_SHAPES = "1x8192,2x4096,2x4096p,4x2048p,8x1024p,16x512p,32x256p,64x128p"
GPU_SHAPES = "2x8192,2x8192p,4x4096p,32x512p,128x128p"
MIB = 2**20
MARGIN_MIB = 2048  # left free for the rest of the machine when deciding whether a shape may run


# ---------------------------------------------------------------- one pass, in a fresh process


def status_mib(field: str, pid: int | str = "self") -> float:
    """``VmRSS``, ``VmHWM`` ... of /proc/<pid>/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak(pid: int | str = "self") -> None:
    """Set the kernel's peak-RSS mark (VmHWM) of ``pid`` to its RSS now (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def one_pass(model_dir: str, rows: int, length: int, threads: int, padded: bool = False) -> dict:
    """Load the torch engine as model.py does on CPU, then the peak of one forward pass of rows x length
    (``padded``: its last row an eighth shorter, so that the attention mask is not all ones)."""
    from ara_reranker_model.engines import load_engine

    started = time.perf_counter()
    engine = load_engine("torch", Path(model_dir), "cpu", "float32", threads)
    pad = int(engine.config.pad_token_id)
    ones = np.ones((2, 16), dtype=np.int64)
    engine.forward(np.full((2, 16), pad + 4, dtype=np.int64), ones, ones)  # model.py's warm-up
    load_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    ids = rng.integers(pad + 1, int(engine.config.vocab_size), size=(rows, length), dtype=np.int64)
    mask = np.ones_like(ids)
    if padded:
        mask[-1, length - length // 8:] = 0
        ids[-1, length - length // 8:] = pad
    loaded = status_mib("VmRSS")
    load_peak = status_mib("VmHWM")
    reset_peak()
    started = time.perf_counter()
    engine.forward(ids, mask, mask)
    forward_s = time.perf_counter() - started
    peak = status_mib("VmHWM")
    return {"rows": rows, "length": length, "padded": padded, "tokens": rows * length, "loaded_mib": round(loaded, 1),
            "peak_mib": round(peak, 1), "activation_mib": round(peak - loaded, 1), "load_peak_mib": round(load_peak, 1),
            "attn_implementation": engine.config._attn_implementation, "load_s": round(load_s, 1),
            "forward_s": round(forward_s, 2)}


def run_child(model_dir: Path, shape: "Shape", threads: int, timeout_s: float) -> dict:
    """``one_pass`` in a fresh interpreter, so that its peak is that pass's alone."""
    command = [sys.executable, "-m", "bench.batch_memory", "--one", str(model_dir), shape.name, "--threads", str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"over --timeout-s {timeout_s:g}"}
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Shape:
    """A micro-batch: ``rows`` x ``length`` tokens, its last row an eighth shorter when ``padded``."""

    rows: int
    length: int
    padded: bool = False

    @property
    def name(self) -> str:
        return f"{self.rows}x{self.length}" + ("p" if self.padded else "")

    @classmethod
    def parse(cls, text: str) -> "Shape":
        rows, length = text.rstrip("p").split("x")
        return cls(int(rows), int(length), text.endswith("p"))


def estimate_peak(done: list[dict], shape: Shape) -> float | None:
    """Peak of ``shape`` scaled from a measured shape of the same length and padding (activation grows with rows)."""
    same = [r for r in done if "peak_mib" in r and r["length"] == shape.length and r["padded"] == shape.padded]
    if not same:
        return None
    ref = max(same, key=lambda r: r["rows"])
    return ref["loaded_mib"] + ref["activation_mib"] * shape.rows / ref["rows"]


def measure_model(model: str, shapes: list[Shape], threads: int, timeout_s: float) -> dict:
    """Every shape of one model, one child each, fewest tokens first."""
    import psutil

    from ara_reranker_model.store import prepare

    model_dir = prepare(model)
    out: list[dict] = []
    for shape in sorted(shapes, key=lambda s: (s.rows * s.length, s.padded, s.rows)):
        estimate = estimate_peak(out, shape)
        available = psutil.virtual_memory().available / MIB
        if estimate is not None and estimate > available - MARGIN_MIB:
            row = {"skipped": f"estimated peak {estimate:.0f} MiB, {available:.0f} MiB available"}
        else:
            row = run_child(model_dir, shape, threads, timeout_s)
        row = {"shape": shape.name, "rows": shape.rows, "length": shape.length, "padded": shape.padded, **row}
        out.append(row)
        print(f"{model} {shape.name}: {row}", flush=True)
    return {"model_dir": str(model_dir), "shapes": out}


# ---------------------------------------------------------------- a real Triton


def shm_mib() -> float:
    """Python-backend shared memory in /dev/shm (its pages are in the processes' RSS once touched)."""
    total = 0
    for entry in os.scandir("/dev/shm"):
        if entry.name.startswith("triton_python_backend"):
            total += entry.stat().st_blocks * 512
    return round(total / MIB, 1)


def padded_rows(pad: int, vocab: int, rows: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` rows of ``length``, ``length - 1``, ... tokens, right-padded: model.py pairs each two into one
    micro-batch with a pad token (cheaper than another pass's 16 overhead tokens), so the mask is not all ones."""
    ids = np.random.default_rng(0).integers(pad + 1, vocab, size=(rows, length), dtype=np.int64)
    mask = np.ones_like(ids)
    for i in range(1, rows):
        mask[i, length - i:] = 0
    ids[mask == 0] = pad
    return ids, mask


def triton_check(model: str, documents: int, padded_length: int, padded_rows_count: int) -> dict:
    """Peak RSS of tritonserver + its stub (CPU configuration, one instance: the figures are per instance) under two loads: ``documents`` long documents
    through the gateway, each cut to the model's length (1-row micro-batches at the budget, no mask); then
    straight to Triton, ``padded_rows_count`` rows of about ``padded_length`` tokens (2-row padded ones)."""
    import tritonclient.grpc as grpcclient

    from ara_reranker_client import RerankerClient
    from ara_reranker_model.store import prepare
    from ara_reranker_server.launcher.gateway_process import GatewayProcess
    from bench.memory import PeakRss
    from bench.systems import NO_CACHE, edited_triton, triton_metrics
    from bench.triton_direct import token_inputs
    from tools.arabic_text import QUERIES, very_long_passage

    model_dir = prepare(model)
    config = json.loads((model_dir / "config.json").read_text())
    rng = np.random.default_rng(0)
    docs = [very_long_passage(rng) for _ in range(documents)]
    out: dict = {"model": model, "forward_workers": len(os.sched_getaffinity(0)), "loads": {}}
    with edited_triton(model_dir, lambda config: setattr(config.instance_group[0], "count", 1)) as triton:
        (stub,) = triton.stub_pids()
        root = triton.process.pid
        out["idle"] = {"tritonserver_mib": round(status_mib("VmRSS", root), 1), "stub_mib": round(status_mib("VmRSS", stub), 1)}

        def measured(name: str, send) -> None:
            before = triton_metrics(triton.metrics_url)
            reset_peak(stub)
            tree = PeakRss(lambda: [root], interval_s=0.02)
            started = time.perf_counter()
            with tree:
                send()
            after = triton_metrics(triton.metrics_url)
            for _ in range(10):  # model.py reports its metrics from a thread: wait until they settle
                time.sleep(0.5)
                after, settled = triton_metrics(triton.metrics_url), after
                if after == settled:
                    break
            forwards = after["forwards"] - before["forwards"]
            out["loads"][name] = {
                "seconds": round(time.perf_counter() - started, 1), "forward_passes": int(forwards),
                "rows_per_pass": round((after["rows"] - before["rows"]) / forwards, 2),
                "padded_tokens_per_pass": round((after["padded_tokens"] - before["padded_tokens"]) / forwards),
                "peak_total_mib": tree.peak_mib, "stub_peak_mib": round(status_mib("VmHWM", stub), 1),
                "stub_activation_mib": round(status_mib("VmHWM", stub) - out["idle"]["stub_mib"], 1),
                "python_backend_shm_mib": shm_mib()}
            print(f"triton {model} {name}: {out['loads'][name]}", flush=True)

        args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(model_dir), "max_message_bytes": str(64 << 20)}
        with GatewayProcess(args | NO_CACHE) as gateway, RerankerClient(gateway.target, timeout=3600.0) as client:
            measured(f"{documents} long documents via the gateway", lambda: client.rerank(QUERIES[0], docs))
        ids, mask = padded_rows(int(config["pad_token_id"]), int(config["vocab_size"]), padded_rows_count, padded_length)

        def infer() -> None:
            with grpcclient.InferenceServerClient(triton.grpc_url) as client:
                client.infer("ara_reranker", token_inputs(ids, mask), client_timeout=3600.0)

        measured(f"{padded_rows_count} rows of {padded_length - padded_rows_count + 1}-{padded_length} tokens straight to Triton", infer)
    return out


# ---------------------------------------------------------------- summary


def worst(shapes: list[dict], budget: int) -> dict | None:
    """The measured micro-batch within ``budget`` tokens that adds the most memory."""
    measured = [s for s in shapes if "activation_mib" in s and s["rows"] * s["length"] <= budget]
    return max(measured, key=lambda s: s["activation_mib"]) if measured else None


def sizing(result: dict, workers: int) -> dict:
    """Per model, the formula's terms at the CPU defaults (budget 8,192, ``workers`` forward workers) and its
    estimate of the Triton container's peak; beside it, what a real Triton reached, where measured."""
    idle = [c["idle"]["tritonserver_mib"] for c in result["triton"].values()]
    tritonserver = max(idle) if idle else None
    out = {}
    for model, measured in result["models"].items():
        w = worst(measured["shapes"], CPU_BUDGET)
        if w is None:
            continue
        row = {"tritonserver_mib": tritonserver, "loaded_mib": w["loaded_mib"], "worst_shape": w["shape"],
               "activation_mib": w["activation_mib"], "forward_workers": workers}
        if tritonserver is not None:
            row["estimate_mib"] = round(tritonserver + w["loaded_mib"] + workers * w["activation_mib"])
        if model in result["triton"]:
            row["measured_peak_mib"] = max(load["peak_total_mib"] for load in result["triton"][model]["loads"].values())
        out[model] = row
    return out


def markdown(result: dict) -> str:
    lines = ["| model | shape | attention | loaded MiB | peak MiB | activation MiB | forward s |", "|---|---|---|---|---|---|---|"]
    for model, measured in result["models"].items():
        for s in measured["shapes"]:
            if "peak_mib" in s:
                lines.append(f"| {model} | {s['shape']} | {s['attn_implementation']} | {s['loaded_mib']:.0f} | "
                             f"{s['peak_mib']:.0f} | {s['activation_mib']:.0f} | {s['forward_s']} |")
            else:
                lines.append(f"| {model} | {s['shape']} | not measured: {s.get('skipped') or s.get('error')} | | | | |")
    if result["triton"]:
        lines += ["", "| real Triton (CPU configuration) | passes x rows | idle MiB | peak MiB | stub peak - idle MiB |",
                  "|---|---|---|---|---|"]
        for model, c in result["triton"].items():
            idle = c["idle"]["tritonserver_mib"] + c["idle"]["stub_mib"]
            for name, load in c["loads"].items():
                lines.append(f"| {model}, {c['forward_workers']} workers: {name} | {load['forward_passes']} x "
                             f"{load['rows_per_pass']} | {idle:.0f} | {load['peak_total_mib']:.0f} | {load['stub_activation_mib']:.0f} |")
    if result["sizing"]:
        lines += ["", "| model | tritonserver + loaded + workers x activation = estimate MiB | real Triton peak MiB |",
                  "|---|---|---|"]
        for model, s in result["sizing"].items():
            lines.append(f"| {model} | {s['tritonserver_mib']} + {s['loaded_mib']} + {s['forward_workers']} x "
                         f"{s['activation_mib']} ({s['worst_shape']}) = {s.get('estimate_mib')} | {s.get('measured_peak_mib', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = results.parser(__doc__)
    parser.add_argument("--models", default="tiny,small,large", help="offline models to measure in-process")
    parser.add_argument("--shapes", default=f"{CPU_SHAPES},{GPU_SHAPES}", help="RxL (rows x length), RxLp: its last row shorter")
    parser.add_argument("--large-shapes", default=None, help="shapes for the large model (default: --shapes)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per pass (configs/cpu.pbtxt: 1)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per pass, load included")
    parser.add_argument("--triton", default="tiny,small", help="models to check in a real Triton ('' for none)")
    parser.add_argument("--documents", type=int, default=8, help="documents cut to the model's length, via the gateway")
    parser.add_argument("--padded-rows", type=int, default=16, help="rows of ~4,096 tokens sent straight to Triton")
    parser.add_argument("--one", nargs=2, metavar=("MODEL_DIR", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        shape = Shape.parse(args.one[1])
        print(json.dumps(one_pass(args.one[0], shape.rows, shape.length, args.threads, shape.padded)))
        return 0
    result: dict = {"threads": args.threads,
                    "budgets": {"cpu": CPU_BUDGET, "gpu": GPU_BUDGET}, "models": {}, "triton": {}}
    for model in [m for m in args.models.split(",") if m]:
        spec = args.large_shapes if model == "large" and args.large_shapes else args.shapes
        result["models"][model] = measure_model(model, [Shape.parse(s) for s in spec.split(",")], args.threads, args.timeout_s)
    for model in [m for m in args.triton.split(",") if m]:
        result["triton"][model] = triton_check(model, args.documents, CPU_BUDGET // 2, args.padded_rows)
    result["sizing"] = sizing(result, len(os.sched_getaffinity(0)))
    results.finish("batch-memory", "bench.batch_memory", argv, args, result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
