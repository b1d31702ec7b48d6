"""The Triton model configurations of ``model_repository/`` (``config.pbtxt``, ``configs/*.pbtxt``), read.

Triton writes its configs in protobuf text format. This reads the subset they use (fields, nested
messages, lists, strings, numbers, enum names, ``#`` comments) into plain dicts and lists, without
tritonclient (only server/ara_reranker_server/triton_endpoint.py talks to Triton). ``fields`` flattens a config into
``dotted.path -> value`` so two configs can be compared field by field; the model's ``parameters`` come
out by key (``parameters.max_batch_tokens``).

The GPU config (``config.pbtxt``) and the CPU one (``configs/cpu.pbtxt``) differ only in
``CPU_DIFFERENCES``, each with its reason; tests/test_configuration.py holds them to that and
docs/configuration.md shows the list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from ara_reranker_model.config import TritonLimits, limits, parameters
from ara_reranker_model.layout import MODEL_REPOSITORY, TRITON_MODEL

__all__ = ["CONFIGS", "CPU_DIFFERENCES", "TritonLimits", "load", "dump", "read", "fields", "parameters", "limits"]

MODEL_DIR = MODEL_REPOSITORY / TRITON_MODEL
CONFIGS = {"gpu": MODEL_DIR / "config.pbtxt", "cpu": MODEL_DIR / "configs" / "cpu.pbtxt"}

# The fields configs/cpu.pbtxt sets otherwise than config.pbtxt, and why. Every other field is the same.
CPU_DIFFERENCES = {
    "instance_group.0.kind": "the instance runs on the CPU, not a GPU",
    "instance_group.0.count": (
        "two instances on CPU, so that one stays free for small calls beside a large request (the gateway's "
        "dispatch_window_chunks); each instance's forward workers already use every core"
    ),
    "dynamic_batching.max_queue_delay_microseconds": (
        "on CPU requests batch by queueing behind the running execute(), so a wait only delays a request "
        "that finds an instance idle; a GPU's short passes leave its queue empty more often, and a short wait fills batches"
    ),
    "parameters.low_priority_batch_tokens": (
        "on CPU, large micro-batches yield the cores to a small request's pass on the other instance; "
        "a GPU's forward time is not the CPU threads'"
    ),
    "parameters.max_batch_tokens": (
        "a CPU pass runs at the same tokens/s whatever its size, so a smaller budget costs nothing and gives the "
        "forward workers more micro-batches to share; a GPU wants larger batches"
    ),
    "parameters.batch_overhead_tokens": (
        "a single-threaded CPU pass costs nearly its tokens alone, so rows of unlike lengths stay apart; "
        "a GPU wants full batches (kernel launches dominate small ones)"
    ),
    "parameters.forward_workers": (
        "micro-batches run side by side, one thread per core, on CPU; one stream on a GPU"
    ),
    "parameters.num_threads": (
        "each CPU pass single-threaded (no per-operator barrier, robust to the gateway's preemption); "
        "the framework default on a GPU"
    ),
}

# Scalars Triton reads as 0 when left out, and that the text format's JSON leaves out when set to 0: ``fields`` shows
# them wherever their message is present, so a config that sets one to 0 still shows it (and one that drops the
# message does not).
ZERO_DEFAULTS = {"dynamic_batching": ("max_queue_delay_microseconds",)}


def load(path: Path | str) -> model_config_pb2.ModelConfig:
    """The config file at ``path`` as Triton's ModelConfig message; ValueError naming the file if Triton would
    refuse it (a field its schema does not have, a malformed value)."""
    try:
        return text_format.Parse(Path(path).read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def dump(config: model_config_pb2.ModelConfig) -> str:
    """A ModelConfig in text format, as Triton reads it."""
    return text_format.MessageToString(config, as_utf8=True)


def read(path: Path | str) -> dict[str, Any]:
    """The config file at ``path`` in the JSON form Triton hands model.py (field names as in the file)."""
    return json_format.MessageToDict(load(path), preserving_proto_field_name=True)


def fields(config: dict[str, Any]) -> dict[str, Any]:
    """Every leaf of ``config`` as ``dotted.path -> value`` (list items by position, parameters by key)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        else:
            out[prefix] = value

    walk("", {k: v for k, v in config.items() if k != "parameters"})
    for message, names in ZERO_DEFAULTS.items():
        if message in config:
            out.update({f"{message}.{name}": 0 for name in names if f"{message}.{name}" not in out})
    out.update({f"parameters.{key}": value for key, value in parameters(config).items()})
    return out
