"""The GPU measurement in one command: ``bash bench/gpu.sh`` (``python -m bench.gpu``), 5-10 minutes on one GPU.

It runs unattended and leaves one results file with the config.pbtxt values it proposes for that GPU
(docs/gpu.md says how to run it; what it measured on an H200 is there too). Each step is recorded in the result; a step that cannot run here (no ONNX Runtime CUDA
provider, no tritonserver, an error) is recorded as skipped with the reason, and the others still run.

1. environment: the GPU, its peak dense float16 tensor rate (for MFU), versions, and what is there:
   ONNX Runtime's CUDA and TensorRT execution providers, a tritonserver.
2. model: ``--model`` (default ``large``: ARA-Reranker-V1's exact shape, 24 x 1024, random weights, built
   offline) and, where ONNX Runtime has CUDA, its float16 ONNX graph.
3. drift: float16 (torch, ONNX Runtime CUDA) and bfloat16 against float32 on the same GPU, in ranking
   terms, on the evaluation set (bench/precision.py).
4. batch shapes: the torch float16 engine's forward passes over full rows of 64-512 tokens at token
   budgets of 4,096-65,536. A least-squares fit of time = a + b x tokens per row width gives
   ``batch_overhead_tokens`` = a / b (median over widths); the proposed ``max_batch_tokens`` is the smallest
   budget, at least the model's max length, whose tokens/s is within 5 % of the best (larger budgets add
   latency and memory, not throughput).
5. in-process limit: each engine (torch float16; ONNX Runtime float16 on CUDA, and on TensorRT where
   there) batching with the proposed values, closed loop at ``--concurrency`` on the benchmark's workload
   (requests of 10 Arabic documents of 20-400 tokens): pairs/s, p50/p99 latency, MFU.
6. Triton with dynamic batching: the production config (config.pbtxt; configs/cpu.pbtxt in a dry run) with
   the proposed values, once per ``--queue-delays`` value, requests tokenized beforehand and sent straight
   to Triton in the gateway's chunks, at each concurrency: pairs/s, p50/p99, MFU, Triton's batch sizes
   and compute share. The proposed queue delay is the one with the most pairs/s at the highest
   concurrency, the shortest of those within 5 %.
7. fairness: small callers (3, ten short documents, fresh queries) alone and beside one caller repeating a huge
   request (``--huge``: 120 pages of 14,000 characters), through the gateway, with 1 and 2 model instances per GPU
   (``--instances``), and the workload's throughput straight to Triton with each. The proposed instance count is the
   fewest that keeps the small calls' p99 within 2x of alone (interactive) for at most 10 % of the throughput.

MFU: model FLOPs of the real (unpadded) tokens per second over the GPU's peak dense float16 rate. Per token
and layer, 8h^2 (attention projections) + 4hf (feed-forward) + 4nh (attention over the n tokens of its row).

``--dry-run`` runs every step on the CPU with the tiny model in about two minutes (float16 emulated, the
CPU Triton config, seconds-long levels): it proves the script works end to end; its figures are not GPU
figures, and its result file is named ``gpu-dryrun-cpu-<timestamp>.json``.

Writes ``bench/results/gpu-<timestamp>.json`` and prints a markdown summary; ``--copy-to DIR`` copies both
there (on a lent machine: the folder whose files come back).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from bench import results

# Peak dense float16 tensor-core rates (TFLOP/s), the vendors' datasheets; first match on the device name.
PEAK_FP16_TFLOPS = (
    ("H200 NVL", 835.0), ("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.5), ("H100", 989.4),
    ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10", 125.0), ("T4", 65.0),
)
NEAR_BEST = 0.95  # "within 5 %" for the proposed budget and queue delay


def peak_tflops(device_name: str) -> float | None:
    """The peak dense float16 rate of a GPU named so, or None when it is not in the table."""
    return next((peak for key, peak in PEAK_FP16_TFLOPS if key in device_name), None)


def pair_flops(config: dict, tokens: np.ndarray) -> np.ndarray:
    """Forward FLOPs of each (unpadded) row of ``tokens`` tokens: layers x (n (8h^2 + 4hf) + 4 n^2 h).
    The embeddings (lookups) and the classification head (one token) are left out."""
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    n = np.asarray(tokens, dtype=np.float64)
    return layers * (n * (8 * h * h + 4 * h * f) + 4 * n * n * h)


class Step:
    """Runs one step, recording its result, or its error as "skipped", in ``result["steps"]``; after each step
    the result so far is written to ``partial`` when given (a run cut off by a time limit still leaves its
    finished steps)."""

    def __init__(self, result: dict, partial: Path | None = None) -> None:
        self.result = result
        self.partial = partial

    def __call__(self, name: str, fn, *args, **kwargs):
        print(f"\n== gpu bench: {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # recorded, and the next steps run: one device run must answer what it can
            traceback.print_exc()
            value = {"skipped": f"{type(exc).__name__}: {exc}"[:1000]}
        if isinstance(value, dict):
            value.setdefault("seconds", round(time.perf_counter() - started, 1))
        self.result["steps"][name] = value
        if self.partial is not None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self.partial.write_text(json.dumps(self.result, indent=1, default=str))
        return value


# ---------------------------------------------------------------- 1. environment

def environment(device: str) -> dict:
    import onnxruntime as ort
    import torch

    from ara_reranker_server.launcher.triton_launcher import has_gpu

    out = {"device": device, "torch_cuda": torch.version.cuda, "onnxruntime_providers": ort.get_available_providers(),
           "tritonserver": _tritonserver(), "nvidia_smi_gpu": has_gpu()}
    try:
        import tensorrt

        out["tensorrt"] = tensorrt.__version__
    except ImportError:
        out["tensorrt"] = None
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(torch.device(device))
        out.update({"gpu": properties.name, "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
                    "multiprocessors": properties.multi_processor_count,
                    "peak_fp16_tflops": peak_tflops(properties.name)})
    return out


def _tritonserver() -> str | None:
    """Which tritonserver the launcher would start: one on PATH, nvidia-pytriton's, or none."""
    found = shutil.which("tritonserver")
    if found:
        return found
    import importlib.util

    spec = importlib.util.find_spec("pytriton")  # not imported: its client needs gevent, which a GPU node may lack
    return str(Path(spec.origin).parent / "tritonserver/bin/tritonserver") if spec and spec.origin else None


# ---------------------------------------------------------------- 4. batch shapes

def batch_shapes(model_dir: Path, device: str, widths: list[int], budgets: list[int], repeats: int) -> dict:
    """Tokens/s of full micro-batches per (row width, token budget); the fitted per-pass overhead and the
    proposed budget."""
    from ara_reranker_model.engines import load_engine
    from ara_reranker_model.inputs import padded_rows
    from ara_reranker_model.limits import max_positions

    engine = load_engine("torch", model_dir, device, "float16", 0, allow_cpu_float16=not device.startswith("cuda"))
    rng = np.random.default_rng(0)
    vocab, pad = int(engine.config.vocab_size), int(engine.config.pad_token_id or 0)
    rows = []
    for width in widths:
        for budget in budgets:
            count = max(1, budget // width)
            ids, mask = padded_rows([rng.integers(5, vocab, size=width) for _ in range(count)], pad)
            engine.forward(ids, mask)  # warm-up (kernels, allocator) for this shape
            started = time.perf_counter()
            for _ in range(repeats):
                engine.forward(ids, mask)  # returns host numpy: synchronised
            seconds = (time.perf_counter() - started) / repeats
            rows.append({"width": width, "rows": count, "tokens": count * width, "ms": round(seconds * 1000, 3),
                         "tokens_per_s": round(count * width / seconds, 1)})
            print(f"  width {width:4d} x {count:4d} rows: {seconds * 1000:8.2f} ms  {count * width / seconds:10.0f} tokens/s",
                  file=sys.stderr, flush=True)
    out = {"engine": "torch float16", "repeats": repeats, "shapes": rows, **_fit(rows, widths, budgets),
           "model_max_length": max_positions(engine.config.to_dict())}
    # model.py refuses a budget below the model's max length (one longest row must fit).
    eligible = [b for b in budgets if b >= out["model_max_length"]] or [max(budgets)]
    relative = out["relative_tokens_per_s"]
    good = [b for b in eligible if relative[str(b)] >= NEAR_BEST]
    out["proposed_max_batch_tokens"] = min(good) if good else max(eligible, key=lambda b: relative[str(b)])
    del engine
    _free(device)
    return out


def _fit(rows: list[dict], widths: list[int], budgets: list[int]) -> dict:
    """time = a + b x tokens per width (least squares): overhead a / b in tokens; tokens/s per budget
    relative to each width's best, averaged over widths."""
    overheads, relative = [], {str(b): [] for b in budgets}
    for width in widths:
        mine = [r for r in rows if r["width"] == width]
        tokens = np.array([r["tokens"] for r in mine], dtype=np.float64)
        seconds = np.array([r["ms"] for r in mine]) / 1000
        if len(set(tokens)) > 1:
            b, a = np.polyfit(tokens, seconds, 1)
            if b > 0:
                overheads.append(max(a, 0.0) / b)
        best = max(r["tokens_per_s"] for r in mine)
        for r, budget in zip(mine, budgets):
            relative[str(budget)].append(r["tokens_per_s"] / best)
    return {"overhead_tokens_per_width": [round(o) for o in overheads],
            "proposed_batch_overhead_tokens": int(np.median(overheads)) if overheads else None,
            "relative_tokens_per_s": {k: round(float(np.mean(v)), 3) for k, v in relative.items()}}


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# ---------------------------------------------------------------- 5. in-process limit

def in_process(model_dir: Path, device: str, systems: dict, workload, concurrency: list[int], seconds: float,
               parameters: dict, flops_per_pair: float, peak: float | None) -> dict:
    """Each engine as the in-process limit (bench/systems.py), closed loop at each concurrency."""
    from bench.loadgen import run_level
    from bench.systems import InProcessLimit

    out: dict = {"parameters": parameters, "systems": {}}
    for name, (engine, dtype, options) in systems.items():
        try:
            system = InProcessLimit(model_dir, engine, dtype=dtype, device=device, engine_options=options, threads=0,
                                    workers=1, max_batch_tokens=parameters["max_batch_tokens"],
                                    overhead_tokens=parameters["batch_overhead_tokens"])
        except Exception as exc:
            out["systems"][name] = {"skipped": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        levels = []
        with system:
            run_level(system.rerank, workload.requests, max(concurrency), min(seconds, 3.0), label=f"{name} warm-up")
            for c in concurrency:
                level = run_level(system.rerank, workload.requests, c, seconds, start_at=1000 * c, label=name)
                levels.append(_level_row(c, level.pairs_per_s, level.p50_ms, level.p99_ms, level.errors, flops_per_pair, peak))
        out["systems"][name] = {"engine": engine, "dtype": dtype, "levels": levels,
                     "padding_ratio": round(system.stats["real_tokens"] / max(system.stats["padded_tokens"], 1), 4)}
        del system
        _free(device)
    return out


def _level_row(concurrency: int, pairs_per_s: float, p50: float, p99: float, errors: int, flops_per_pair: float,
               peak: float | None, **extra) -> dict:
    tflops = pairs_per_s * flops_per_pair / 1e12
    return {"concurrency": concurrency, "pairs_per_s": round(pairs_per_s, 1), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
            "model_tflops": round(tflops, 3), "mfu": round(tflops / peak, 4) if peak else None, "errors": errors, **extra}


# ---------------------------------------------------------------- 6. Triton

def configured_repository(target: Path, model_dir: Path, queue_delay_us: int, parameters: dict[str, object],
                          instances: int | None = None) -> Path:
    """The model repository with every config's queue delay and the given parameters set, and ``instances`` model
    instances when given (the launcher's generated repository: name and weights directory already set)."""
    from ara_reranker_server import triton_config
    from ara_reranker_server.launcher.triton_launcher import MODEL_NAME, generate_repository

    repository = generate_repository(target, {MODEL_NAME: model_dir})
    for path in (repository / MODEL_NAME).rglob("*.pbtxt"):
        config = triton_config.load(path)
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
        if instances is not None:
            config.instance_group[0].count = instances
        for key, value in parameters.items():
            if key not in config.parameters:
                raise ValueError(f"{path}: no {key} parameter")
            config.parameters[key].string_value = str(value)
        path.write_text(triton_config.dump(config))
    return repository


def prepared_requests(model_dir: Path, workload, chunk_size: int) -> tuple[list, np.ndarray]:
    """Each request as the gateway sends it: pairs tokenized (document truncated), sorted by length, cut
    into chunks of ``chunk_size``, each right-padded (the gateway's padding); and every pair's length."""
    from transformers import AutoTokenizer

    from ara_reranker_model.inputs import padded_rows

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prepared, lengths = [], []
    for request in workload.requests:
        ids = tokenizer([request.query] * len(request.documents), request.documents, truncation="only_second",
                        max_length=int(tokenizer.model_max_length))["input_ids"]
        ids.sort(key=len, reverse=True)
        lengths += [len(row) for row in ids]
        prepared.append([padded_rows(ids[a : a + chunk_size], int(tokenizer.pad_token_id)) for a in range(0, len(ids), chunk_size)])
    return prepared, np.array(lengths)


def triton(model_dir: Path, queue_delays: list[int], parameters: dict, prepared: list, concurrency: list[int],
           seconds: float, flops_per_pair: float, peak: float | None, tmp: Path) -> dict:
    """The Triton model with dynamic batching, once per queue delay."""
    from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
    from bench.gateway_capacity import Probe, triton_level

    # The config's engine and dtype: torch, auto (float16 on a GPU, float32 in a CPU dry run).
    out: dict = {"parameters": parameters, "by_queue_delay_us": {}}
    for delay in queue_delays:
        repository = configured_repository(tmp / f"repository-{delay}", model_dir, delay, parameters)
        options = TritonOptions(model_dir=model_dir, model_repository=repository, log_path=tmp / f"tritonserver-{delay}.log",
                                startup_timeout_s=600.0)
        started = time.perf_counter()
        with TritonServer(options) as server:
            load_s = time.perf_counter() - started
            probe = Probe(None, server.process.pid, server.metrics_url)
            # A closed loop straight to Triton (bench/gateway_capacity.py's), one row per concurrency.
            rows = [triton_level(server.grpc_url, server.model_names[0], prepared, c, min(seconds, 2.0), seconds, probe)
                    for c in concurrency]
        levels = [_level_row(r["concurrency"], r["little_pairs_per_s"], r["p50_ms"], r["p99_ms"], r["errors"], flops_per_pair, peak,
                             window_pairs_per_s=r["pairs_per_s"], triton_compute_busy=r["triton_compute_busy"],
                             triton_batch_requests=round(r["triton_requests"] / max(r["triton_executions"], 1), 2),
                             triton_queue_ms=r["triton_queue_ms_per_request"]) for r in rows]
        out["by_queue_delay_us"][str(delay)] = {"startup_s": round(load_s, 1), "levels": levels}
        for level in levels:
            print(f"  queue delay {delay:5d} us  c={level['concurrency']:<3d} {level['pairs_per_s']:9.1f} pairs/s  "
                  f"p50 {level['p50_ms']:8.2f} ms  p99 {level['p99_ms']:8.2f} ms  MFU {level['mfu']}", file=sys.stderr, flush=True)
    top = {delay: runs["levels"][-1]["pairs_per_s"] for delay, runs in out["by_queue_delay_us"].items()}
    best = max(top.values())
    out["proposed_max_queue_delay_microseconds"] = min(int(d) for d, v in top.items() if v >= NEAR_BEST * best)
    return out


# ---------------------------------------------------------------- 7. fairness

FAIR_P99 = 2.0  # small calls' p99 beside the huge caller, at most this many times their p99 alone
FAIR_PRICE = 0.10  # and at most this share of the throughput of one instance given up for it


def fairness(model_dir: Path, queue_delay_us: int, parameters: dict, instances: list[int], prepared: list,
             concurrency: int, seconds: float, huge: tuple[int, int], clients: int, tmp: Path) -> dict:
    """The production config with each of ``instances`` model instances per GPU, through the gateway (its shipped
    settings: large requests' chunks on one instance fewer than there are, dispatch_window_chunks auto):
    bench.intake's phases (``clients`` small callers alone, beside one caller repeating ``huge`` = (pages,
    characters) at each priority, that caller alone), and the benchmark's workload straight to Triton at
    ``concurrency`` callers (the throughput the instances give). Proposes the fewest instances that keep the small
    calls' p99 within FAIR_P99 of alone at interactive priority for at most FAIR_PRICE of one instance's
    throughput, on both measures."""
    from ara_reranker_server.launcher.gateway_process import GatewayProcess
    from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
    from bench.gateway_capacity import Probe, triton_level
    from bench.intake import phases, worst_case_documents
    from bench.systems import NO_CACHE

    pages = worst_case_documents(*huge)
    out: dict = {"clients": clients, "seconds": seconds, "huge_request": {"documents": huge[0], "characters": huge[1]},
                 "workload_concurrency": concurrency, "by_instances": {}}
    for count in instances:
        repository = configured_repository(tmp / f"fairness-{count}", model_dir, queue_delay_us, parameters, instances=count)
        options = TritonOptions(model_dir=model_dir, model_repository=repository, log_path=tmp / f"tritonserver-fairness-{count}.log",
                                startup_timeout_s=600.0)
        with TritonServer(options) as server:
            probe = Probe(None, server.process.pid, server.metrics_url)
            workload = triton_level(server.grpc_url, server.model_names[0], prepared, concurrency, min(seconds, 2.0), seconds, probe)
            settings = {"triton_endpoints": server.grpc_url, "tokenizer": str(model_dir), "max_message_bytes": str(64 << 20), **NO_CACHE}
            with GatewayProcess(settings) as gateway:
                figures = phases(gateway.target, pages, clients, seconds)
        alone = figures["alone"]["p99_ms"]
        row = {"phases": figures, "workload_pairs_per_s": round(workload["little_pairs_per_s"], 1),
               "huge_alone_pairs_per_s": figures["worst_case_alone"]["worst_case_caller"]["pairs_per_s"],
               "p99_over_alone": {p: round(figures[f"beside_worst_case_{p}"]["p99_ms"] / alone, 2) for p in ("interactive", "batch")}}
        out["by_instances"][str(count)] = row
        print(f"  {count} instance(s): small p99 x{row['p99_over_alone']['interactive']} beside the huge caller (interactive), "
              f"x{row['p99_over_alone']['batch']} (batch); workload {row['workload_pairs_per_s']} pairs/s; huge caller alone "
              f"{row['huge_alone_pairs_per_s']} pairs/s", file=sys.stderr, flush=True)
    out["proposed_instances"], out["why"] = proposed_instances(out["by_instances"])
    return out


def proposed_instances(by_instances: dict) -> tuple[int | None, str]:
    """The fewest instances whose small calls stay within FAIR_P99 of alone (interactive) while giving up at most
    FAIR_PRICE of the fewest instances' throughput on the workload and for the huge caller alone; None if none does."""
    counts = sorted(by_instances, key=int)
    base = by_instances[counts[0]]
    for count in counts:
        row = by_instances[count]
        fair = row["p99_over_alone"]["interactive"] <= FAIR_P99
        cheap = all(row[k] >= (1 - FAIR_PRICE) * base[k] for k in ("workload_pairs_per_s", "huge_alone_pairs_per_s"))
        if fair and cheap:
            return int(count), (f"{count} instance(s): small calls' p99 {row['p99_over_alone']['interactive']}x alone beside the "
                                f"huge caller, throughput within {FAIR_PRICE:.0%} of {counts[0]}")
    return None, (f"no count measured keeps small calls within {FAIR_P99}x of alone for at most {FAIR_PRICE:.0%} of "
                  f"the throughput: " + "; ".join(f"{c}: {by_instances[c]['p99_over_alone']['interactive']}x" for c in counts))


# ---------------------------------------------------------------- the run

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with the tiny model, seconds-long")
    parser.add_argument("--model", default=None, help="offline model or directory (default large; tiny with --dry-run)")
    parser.add_argument("--device", default=None, help="cuda[:N] (default; cpu with --dry-run)")
    parser.add_argument("--concurrency", default=None, help="closed-loop callers per level (default 1,8,32,64)")
    parser.add_argument("--seconds", type=float, default=None, help="measurement window per level (default 5)")
    parser.add_argument("--queue-delays", default="0,100", help="Triton max_queue_delay_microseconds values to compare")
    parser.add_argument("--widths", default=None, help="row widths of the batch-shape sweep (default 64,128,256,512)")
    parser.add_argument("--budgets", default=None, help="token budgets of the sweep (default 4096,...,65536)")
    parser.add_argument("--requests", type=int, default=None, help="distinct requests in the workload (default 96)")
    parser.add_argument("--drift-options", default=None, help="engine:dtype,... for the drift step (default bench.precision's GPU options)")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip: drift, shapes, in_process, triton, onnx, fairness")
    parser.add_argument("--instances", default="1,2", help="model instances per GPU the fairness step compares")
    parser.add_argument("--huge", default=None, help="the fairness step's huge request: pages,characters (default 120,14000; "
                        "dry run 24,3000)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's peak dense float16 TFLOP/s, for MFU, where the built-in table lacks it")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the result goes (default bench/results)")
    parser.add_argument("--copy-to", type=Path, default=None, help="also copy the result JSON and markdown here")
    args = _defaults(parser.parse_args(argv))
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here: run with --dry-run (CPU, tiny model) to check the script")
    result: dict = {
        "meta": {"dry_run": args.dry_run, "model": args.model, "device": args.device,
                 "note": "CPU DRY RUN of the GPU script on the tiny model: proves every step runs; its figures are "
                         "not GPU figures" if args.dry_run else "GPU measurement (bench/gpu.py)",
                 },
        "steps": {},
    }
    partial = args.copy_to / "gpu-partial.json" if args.copy_to is not None else None
    _measure(args, result, Step(result, partial))
    return _finish(result, results.command_line("bench.gpu", argv), args.dry_run, args.out_dir, args.copy_to)


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    """A GPU run's defaults, or a dry run's (tiny model, CPU, second-long levels); lists parsed."""
    dry = args.dry_run
    args.model = args.model or ("tiny" if dry else "large")
    args.device = args.device or ("cpu" if dry else "cuda")
    args.concurrency = [int(c) for c in (args.concurrency or ("1,4" if dry else "1,8,32,64")).split(",")]
    args.seconds = args.seconds or (1.0 if dry else 5.0)
    args.widths = [int(w) for w in (args.widths or ("64,256" if dry else "64,128,256,512")).split(",")]
    args.budgets = [int(b) for b in (args.budgets or ("4096,8192,16384" if dry else "4096,8192,16384,32768,65536")).split(",")]
    args.queue_delays = [int(d) for d in args.queue_delays.split(",")]
    args.requests = args.requests or (16 if dry else 96)
    args.skip = set(filter(None, args.skip.split(",")))
    args.instances = [int(n) for n in args.instances.split(",")]
    args.huge = tuple(int(n) for n in (args.huge or ("24,3000" if dry else "120,14000")).split(","))
    return args


def _measure(args: argparse.Namespace, result: dict, step: Step) -> None:
    """Steps 1-7 of the module docstring, each recorded in ``result``."""
    from bench.worker import config_parameters

    env = step("environment", environment, args.device)
    peak = result["meta"]["peak_fp16_tflops"] = args.peak_tflops or env.get("peak_fp16_tflops")
    on_gpu = args.device.startswith("cuda")
    onnx_cuda = "CUDAExecutionProvider" in env.get("onnxruntime_providers", []) and "onnx" not in args.skip
    model_dir = prepare_model(step, args.model, onnx_cuda or (args.dry_run and "onnx" not in args.skip))
    result["meta"]["model_dir"] = str(model_dir)
    if "drift" not in args.skip:
        step("drift", _drift, model_dir, args.device, on_gpu, args.drift_options)
    parameters = {k: int(v) for k, v in config_parameters("gpu" if on_gpu else "cpu").items()
                  if k in ("max_batch_tokens", "batch_overhead_tokens")}
    if "shapes" not in args.skip:
        shapes = step("batch_shapes", batch_shapes, model_dir, args.device, args.widths, args.budgets, 2 if args.dry_run else 5)
        if "skipped" not in shapes:
            parameters = {"max_batch_tokens": shapes["proposed_max_batch_tokens"],
                          "batch_overhead_tokens": shapes["proposed_batch_overhead_tokens"] or parameters["batch_overhead_tokens"]}
    result["proposed"] = dict(parameters)
    workload, prepared, flops_per_pair = _workload(model_dir, args.requests, result)
    if "in_process" not in args.skip:
        step("in_process", in_process, model_dir, args.device, _systems(env, onnx_cuda, args.dry_run), workload,
             args.concurrency, args.seconds, parameters, flops_per_pair, peak)
    if "triton" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
            queue = step("triton", triton, model_dir, args.queue_delays, parameters, prepared, args.concurrency,
                         args.seconds, flops_per_pair, peak, Path(tmp))
        if "proposed_max_queue_delay_microseconds" in queue:
            result["proposed"]["max_queue_delay_microseconds"] = queue["proposed_max_queue_delay_microseconds"]
    if "fairness" not in args.skip:
        delay = result["proposed"].get("max_queue_delay_microseconds", args.queue_delays[0])
        with tempfile.TemporaryDirectory(prefix="gpu-fairness-") as tmp:
            fair = step("fairness", fairness, model_dir, delay, parameters, args.instances, prepared, max(args.concurrency),
                        args.seconds, args.huge, 3, Path(tmp))
        if fair.get("proposed_instances"):
            result["proposed"]["instance_group_count"] = fair["proposed_instances"]


def _workload(model_dir: Path, requests: int, result: dict):
    """The benchmark's workload, the same requests as Triton gets them, and the model FLOPs of a mean pair."""
    from transformers import AutoTokenizer

    from ara_reranker_server.settings import Settings
    from bench.workload import make_workload

    chunk_size = Settings().chunk_size  # the gateway's default: pairs per Triton request
    workload = make_workload(AutoTokenizer.from_pretrained(model_dir), requests=requests)
    prepared, lengths = prepared_requests(model_dir, workload, chunk_size)
    flops_per_pair = float(pair_flops(json.loads((model_dir / "config.json").read_text()), lengths).mean())
    result["workload"] = {**workload.summary(), "pair_tokens_mean": round(float(lengths.mean()), 1),
                          "model_gflop_per_pair": round(flops_per_pair / 1e9, 3), "chunk_size": chunk_size}
    return workload, prepared, flops_per_pair


def prepare_model(step: Step, model: str, onnx: bool) -> Path:
    """The model directory (built offline if needed) and, when it can be used here, its float16 graph."""
    from ara_reranker_model.store import prepare

    prepared = step("model", lambda: {"dir": str(prepare(model))})
    if "skipped" in prepared:  # no model, no measurement
        raise SystemExit(f"could not prepare {model}: {prepared['skipped']}")
    model_dir = Path(prepared["dir"])
    if onnx:
        from ara_reranker_model.onnx_export import export_onnx

        step("onnx_export", lambda: {"graph": str(export_onnx(model_dir, dtype="float16"))})
    return model_dir


def _drift(model_dir: Path, device: str, on_gpu: bool, options: str | None) -> dict:
    from bench.precision import GPU_OPTIONS, markdown, measure, parse_options
    from bench.worker import config_parameters
    from client.evaluation import SAMPLE_DATA, load_dataset

    # The GPU's options; in a dry run the same ones, float16 emulated on the CPU.
    out = measure(model_dir, device, parse_options(options or GPU_OPTIONS, device), load_dataset(SAMPLE_DATA),
                  config_parameters("gpu" if on_gpu else "cpu"))
    out["table"] = markdown(out)
    return out


def _systems(env: dict, onnx_cuda: bool, dry: bool) -> dict:
    """The engines of the in-process limit: name -> (engine, dtype, keyword options)."""
    emulate = {"allow_cpu_float16": True} if dry else {}
    systems = {"torch-fp16": ("torch", "float16", emulate)}
    if onnx_cuda or dry:
        systems["onnx-fp16"] = ("onnx", "float16", emulate)
    if "TensorrtExecutionProvider" in env.get("onnxruntime_providers", []):
        # TensorRT builds its own float16 engine from the float32 graph (first call: minutes; cached after).
        trt = {"providers": [("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                                            "trt_engine_cache_path": "/tmp/ara-trt-cache"}),
                             "CUDAExecutionProvider"]}
        systems["onnx-tensorrt-fp16"] = ("onnx", "float32", trt)
    return systems


def _finish(result: dict, command: str, dry: bool, out_dir: Path | None, copy_to: Path | None) -> int:
    path = results.write("gpu-dryrun-cpu" if dry else "gpu", command, result, out_dir)
    summary = path.with_suffix(".md")
    summary.write_text(markdown_summary(results.read(path)))
    print("\n" + summary.read_text())
    if copy_to is not None:
        copy_to.mkdir(parents=True, exist_ok=True)
        for file in (path, summary):
            shutil.copyfile(file, copy_to / file.name)
        (copy_to / "gpu-partial.json").unlink(missing_ok=True)  # the whole result is there now
    skipped = [name for name, value in result["steps"].items() if isinstance(value, dict) and "skipped" in value]
    print(f"steps skipped: {', '.join(skipped) or 'none'}")
    return 0


def markdown_summary(found: results.Result) -> str:
    """What an operator reads first: the proposed config values, throughput and latency, drift."""
    result = found.data
    meta, steps = result["meta"], result["steps"]
    env = steps.get("environment", {})
    lines = [f"# GPU measurement{' (CPU DRY RUN: not GPU figures)' if meta['dry_run'] else ''}", "",
             f"{meta['note']}. Model {meta['model']} on {env.get('gpu', meta['device'])}; git {found.commit}; "
             f"`{found.command}`.", "", "## Proposed config.pbtxt values", ""]
    lines += [f"- `{key}`: {value}" for key, value in result.get("proposed", {}).items()]
    for name, value in steps.items():
        if isinstance(value, dict) and "skipped" in value:
            lines.append(f"- step {name} skipped: {value['skipped'][:300]}")
    for name, run in steps.get("in_process", {}).get("systems", {}).items():
        if "skipped" in run:
            lines.append(f"- in-process {name} skipped: {run['skipped'][:300]}")
    lines += ["", "## Throughput and latency", "", "| system | concurrency | pairs/s | p50 ms | p99 ms | model TFLOP/s | MFU |",
              "|---|---|---|---|---|---|---|"]
    runs = [(name, run["levels"]) for name, run in steps.get("in_process", {}).get("systems", {}).items() if "levels" in run]
    runs += [(f"triton (queue delay {delay} us)", run["levels"])
             for delay, run in steps.get("triton", {}).get("by_queue_delay_us", {}).items()]
    for name, levels in runs:
        for level in levels:
            mfu = "n/a" if level["mfu"] is None else f"{level['mfu']:.1%}"
            lines.append(f"| {name} | {level['concurrency']} | {level['pairs_per_s']:.1f} | {level['p50_ms']:.1f} "
                         f"| {level['p99_ms']:.1f} | {level['model_tflops']:.2f} | {mfu} |")
    if by := steps.get("fairness", {}).get("by_instances"):
        lines += ["", "## Small calls beside a huge one", "", f"{steps['fairness']['why']}.", "",
                  "| instances | small p99 alone ms | beside, interactive | beside, batch | workload pairs/s | huge caller alone pairs/s |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for count, row in by.items():
            lines.append(f"| {count} | {row['phases']['alone']['p99_ms']} | {row['p99_over_alone']['interactive']}x "
                         f"| {row['p99_over_alone']['batch']}x | {row['workload_pairs_per_s']} | {row['huge_alone_pairs_per_s']} |")
    if "table" in steps.get("drift", {}):
        lines += ["", "## Drift from float32 on this device", "", steps["drift"]["table"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
