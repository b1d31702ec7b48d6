"""Each served model's Triton pod size, from ``python -m bench.batch_memory`` results: the table
deploy/k8s/model-sizing.json, which ``python -m deploy.k8s.generate_fleet`` writes and the multi-model overlay's
Triton Deployments take their resources from.

A model is sized from the offline stand-in of its exact shape (``measured_as`` in the overlay's models.yaml), as
measured in the newest bench/results/batch-memory-*.json holding it. One Triton pod serves one model on one GPU
with the GPU configuration (config.pbtxt: one forward worker, float16, ``max_batch_tokens`` 16,384):

* host memory request = tritonserver + the stub at rest at most + the CUDA runtime's host memory. The stub at rest at
  most is the larger of what was measured and the runtime (the ``tiny`` stand-in's stub: torch and transformers with
  no weights to speak of) plus the whole float32 weights, read as the model loads (docs/configuration.md#memory).
  The limit adds the memory-backed /dev/shm, which counts against it.
* GPU memory = the CUDA context + the float16 weights + one micro-batch's activation at the GPU budget: the worst
  measured within 16,384 tokens, else twice the worst within 8,192 (float32 on CPU: an estimate for float16 on a
  GPU, which no measurement here covers). The Deployment requires a node whose GPU has more (GPU feature
  discovery's ``nvidia.com/gpu.memory`` label, MiB).

A stand-in with no result yet (``estimate_from``) is estimated, and marked so in the table: at rest the runtime
plus its float32 weights, its activation that of the measured stand-in named, times ``ESTIMATE_MARGIN``. Measure it
(the command is in its row) and regenerate: the estimate is replaced by the measurement.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.results import read as read_result

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
CPU_BUDGET, GPU_BUDGET = 8192, 16384  # bench.batch_memory's budgets: configs/cpu.pbtxt, config.pbtxt
MIB = 2**20
RUNTIME_STAND_IN = "tiny"  # its stub at rest is the runtime alone (its weights: 1 MiB)
# Not measured here (no GPU): allowances, to be replaced by a GPU node's figures (nvidia-smi, the pod's working set).
CUDA_CONTEXT_MIB = 1024  # GPU memory of the CUDA context and library workspaces
CUDA_HOST_MIB = 2048  # host memory the CUDA runtime and libraries add to the stub
ESTIMATE_MARGIN = 1.5  # on an activation borrowed from another stand-in's measurement
DSHM_MIB = 4096  # the memory-backed /dev/shm of a GPU Triton pod (overlays/gpu-prod/triton-gpu.yaml)
TRITON_CPU = "2"  # tritonserver's gRPC threads and the stub's execute loop; the forward pass runs on the GPU

__all__ = ["sizing_table", "latest_measurements"]


def latest_measurements(results: Path = RESULTS) -> tuple[dict[str, dict], dict[str, str]]:
    """Per stand-in, its shapes from the newest batch-memory result that measured it, and that file's path; also
    ``tritonserver`` (the newest real Triton's idle tritonserver RSS, from a result that ran one)."""
    shapes: dict[str, dict] = {}
    sources: dict[str, str] = {}
    for path in sorted(results.glob("batch-memory-*.json")):  # timestamped names: the newest last, and it wins
        result = read_result(path).data
        for model, measured in result.get("models", {}).items():
            done = [s for s in measured["shapes"] if "activation_mib" in s]
            if done:
                shapes[model], sources[model] = {"shapes": done}, path.relative_to(ROOT).as_posix()
        idle = [c["idle"]["tritonserver_mib"] for c in result.get("triton", {}).values()]
        if idle:
            shapes["tritonserver"], sources["tritonserver"] = {"mib": max(idle)}, path.relative_to(ROOT).as_posix()
    return shapes, sources


def _worst(shapes: list[dict], budget: int) -> dict | None:
    within = [s for s in shapes if s["rows"] * s["length"] <= budget]
    return max(within, key=lambda s: s["activation_mib"]) if within else None


def _stand_in_terms(name: str, measured: dict[str, dict], sources: dict[str, str]) -> dict:
    """At rest and activation at both budgets of a measured stand-in, with where each figure came from."""
    shapes = measured[name]["shapes"]
    cpu, gpu = _worst(shapes, CPU_BUDGET), _worst([s for s in shapes if s["rows"] * s["length"] > CPU_BUDGET], GPU_BUDGET)
    if cpu is None:
        raise ValueError(f"{sources[name]}: {name} has no micro-batch measured within {CPU_BUDGET} tokens")
    terms = {"source": sources[name], "loaded_mib": max(s["loaded_mib"] for s in shapes),
             "cpu_budget_activation_mib": cpu["activation_mib"], "cpu_budget_worst_shape": cpu["shape"]}
    if gpu is not None and gpu["activation_mib"] >= cpu["activation_mib"]:
        terms |= {"gpu_budget_activation_mib": gpu["activation_mib"], "gpu_budget_worst_shape": gpu["shape"]}
    else:
        terms |= {"gpu_budget_activation_mib": round(2 * cpu["activation_mib"], 1),
                  "gpu_budget_worst_shape": f"not measured: twice {cpu['shape']}"}
    return terms


def _model_terms(entry: dict, measured: dict[str, dict], sources: dict[str, str], runtime_mib: float) -> dict:
    stand_in = entry["measured_as"]
    weights_mib = entry["parameters"] * 4 / MIB
    if stand_in in measured:
        return {"measured_as": stand_in, "measured": True, **_stand_in_terms(stand_in, measured, sources)}
    reference = entry.get("estimate_from")
    if reference not in measured:
        raise ValueError(f"{entry['model']}: no batch-memory result for {stand_in} and no measured estimate_from")
    borrowed = _stand_in_terms(reference, measured, sources)
    return {
        "measured_as": stand_in, "measured": False,
        "to_replace": f"ESTIMATE, to be replaced: run `python -m bench.batch_memory --models {stand_in} --shapes "
                      f"2x4096p --threads 2 --triton ''` (as for large), then `python -m deploy.k8s.generate_fleet`",
        "source": f"estimated from {reference} ({borrowed['source']})",
        "loaded_mib": round(runtime_mib + weights_mib, 1),
        "cpu_budget_activation_mib": round(ESTIMATE_MARGIN * borrowed["cpu_budget_activation_mib"], 1),
        "cpu_budget_worst_shape": f"{ESTIMATE_MARGIN} x {reference}'s ({borrowed['cpu_budget_worst_shape']})",
        "gpu_budget_activation_mib": round(ESTIMATE_MARGIN * borrowed["gpu_budget_activation_mib"], 1),
        "gpu_budget_worst_shape": f"{ESTIMATE_MARGIN} x {reference}'s ({borrowed['gpu_budget_worst_shape']})",
        "derivation": f"at rest: the runtime ({RUNTIME_STAND_IN}'s stub, {runtime_mib} MiB) + {entry['parameters']:,} "
                      f"parameters x 4 bytes; activation: {reference}'s measured x {ESTIMATE_MARGIN}",
    }


def _gib(mib: float) -> str:
    return f"{math.ceil(mib / 1024)}Gi"


def size(entry: dict, measured: dict[str, dict], sources: dict[str, str]) -> dict:
    """One served model's row: the terms, the formula's sums and the pod's resources."""
    runtime_mib = max(s["loaded_mib"] for s in measured[RUNTIME_STAND_IN]["shapes"])
    tritonserver_mib = measured["tritonserver"]["mib"]
    terms = _model_terms(entry, measured, sources, runtime_mib)
    weights_fp32_mib = round(entry["parameters"] * 4 / MIB, 1)
    at_rest_max_mib = round(max(terms["loaded_mib"], runtime_mib + weights_fp32_mib), 1)
    host_mib = round(tritonserver_mib + at_rest_max_mib + CUDA_HOST_MIB)
    gpu_mib = round(CUDA_CONTEXT_MIB + entry["parameters"] * 2 / MIB + terms["gpu_budget_activation_mib"])
    request = _gib(host_mib)
    limit = _gib(math.ceil(host_mib / 1024) * 1024 + DSHM_MIB)
    return {
        "model": entry["model"], "parameters": entry["parameters"], **terms,
        "tritonserver_mib": tritonserver_mib, "runtime_mib": runtime_mib, "weights_fp32_mib": weights_fp32_mib,
        "at_rest_max_mib": at_rest_max_mib, "host_memory_mib": host_mib, "gpu_memory_mib": gpu_mib,
        "resources": {"requests": {"cpu": TRITON_CPU, "memory": request, "nvidia.com/gpu": 1},
                      "limits": {"memory": limit, "nvidia.com/gpu": 1}},
        "dshm": _gib(DSHM_MIB),
        # The model-fetch Job's volume: the float32 weights with room for a second copy while the store replaces one.
        "volume": _gib(max(1024, 2 * weights_fp32_mib)),
    }


def sizing_table(fleet: dict[str, dict], results: Path = RESULTS) -> dict:
    """The table model-sizing.json holds for ``fleet`` (served name -> its models.yaml entry), keyed by served name."""
    measured, sources = latest_measurements(results)
    return {
        "generated_by": "python -m deploy.k8s.generate_fleet (deploy/k8s/model_sizing.py: the formula and its allowances)",
        "formula": {
            "host_memory_mib": "tritonserver_mib + at_rest_max_mib + cuda_host_mib; at_rest_max_mib = max(loaded_mib, "
                               "runtime_mib + weights_fp32_mib); request = host_memory_mib, limit = request + dshm",
            "gpu_memory_mib": "cuda_context_mib + parameters x 2 bytes + gpu_budget_activation_mib",
            "cuda_host_mib": CUDA_HOST_MIB, "cuda_context_mib": CUDA_CONTEXT_MIB, "estimate_margin": ESTIMATE_MARGIN,
            "not_measured": "cuda_host_mib and cuda_context_mib (no GPU here): replace them with a GPU node's figures",
            "tritonserver_source": sources["tritonserver"], "runtime_source": sources[RUNTIME_STAND_IN],
        },
        "models": {name: size(entry, measured, sources) for name, entry in fleet.items()},
    }
