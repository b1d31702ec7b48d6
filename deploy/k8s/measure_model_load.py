"""Measure how long tritonserver takes from start to the model READY, to size the startup probe.

    .venv/bin/python -m deploy.k8s.measure_model_load --model large

Writes deploy/k8s/model-load.json; tests/test_deploy_k8s.py checks that every overlay's Triton startup
probe budget is at least twice the measured time. ``large`` is an offline model with ARA-Reranker-V1's
exact shape (24 x 1024, 568M float32 parameters, 2.2 GB of safetensors): the same bytes to read and the
same graph to build as the real model; its weights are random, which does not change the load time.
Measured on CPU (this project's build machines have no GPU): import torch and transformers, read the
weights, build the model, one warm-up forward pass. On a GPU node the weights are also copied to the
device and cast to fp16 (seconds for 2.2 GB), while the warm-up pass is much faster than on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer

RESULT = Path(__file__).resolve().parent / "model-load.json"


def measure(model: str, runs: int) -> list[float]:
    """Seconds from launching tritonserver to the model answering READY, once per run."""
    model_dir = prepare(model)
    times = []
    for _ in range(runs):
        started = time.monotonic()
        with TritonServer(TritonOptions(model_dir=model_dir, config_name="cpu", startup_timeout_s=900)):
            times.append(round(time.monotonic() - started, 1))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="large")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    times = measure(args.model, args.runs)
    result = {
        "model": args.model,
        "seconds_to_ready": times,
        "max_s": max(times),
        "device": "cpu",
        "cpus": len(os.sched_getaffinity(0)),
        "machine": platform.machine(),
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "command": f"python -m deploy.k8s.measure_model_load --model {args.model} --runs {args.runs}",
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
