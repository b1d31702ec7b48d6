"""The Triton model configurations of ``model_repository/`` (``config.pbtxt``, ``configs/*.pbtxt``), read.

Triton writes its configs in protobuf text format. This reads the subset they use (fields, nested
messages, lists, strings, numbers, enum names, ``#`` comments) into plain dicts and lists, without
tritonclient (only server/triton_client.py talks to Triton). ``fields`` flattens a config into
``dotted.path -> value`` so two configs can be compared field by field; the model's ``parameters`` come
out by key (``parameters.max_batch_tokens``).

The GPU config (``config.pbtxt``) and the CPU one (``configs/cpu.pbtxt``) differ only in
``CPU_DIFFERENCES``, each with its reason; tests/test_configuration.py holds them to that and
docs/configuration.md shows the list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CONFIGS", "CPU_DIFFERENCES", "TritonLimits", "parse", "read", "fields", "parameters", "limits"]

MODEL_DIR = Path(__file__).resolve().parent.parent / "model_repository" / "ara_reranker"
CONFIGS = {"gpu": MODEL_DIR / "config.pbtxt", "cpu": MODEL_DIR / "configs" / "cpu.pbtxt"}

# The fields configs/cpu.pbtxt sets otherwise than config.pbtxt, and why. Every other field is the same.
CPU_DIFFERENCES = {
    "instance_group.0.kind": "the instance runs on the CPU, not a GPU",
    "dynamic_batching.max_queue_delay_microseconds": (
        "with one CPU instance busy most of the time, requests batch by queueing behind the running execute(); "
        "waiting longer only adds latency when the model is idle"
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

_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|[{}\[\]:,;]|[^\s{}\[\]:,;"#]+')


@dataclass(frozen=True)
class TritonLimits:
    """The Triton-side limits the gateway's must agree with (see server.model_limits.COUPLED_LIMITS)."""

    max_batch_size: int
    max_queue_size: int
    max_batch_tokens: int


def parse(text: str) -> dict[str, Any]:
    """A protobuf text-format message as a dict; a field given twice becomes a list."""
    tokens = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    message, end = _message(tokens, 0, closing=None)
    if end != len(tokens):
        raise ValueError(f"unexpected {tokens[end]!r} at top level")
    return message


def _message(tokens: list[str], i: int, closing: str | None) -> tuple[dict[str, Any], int]:
    message: dict[str, Any] = {}
    while i < len(tokens) and tokens[i] != closing:
        name = tokens[i]
        i += 1
        if tokens[i] == ":":
            i += 1
        value, i = _value(tokens, i)
        if name in message:  # a repeated field written as several entries
            previous = message[name]
            message[name] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            message[name] = value
        if i < len(tokens) and tokens[i] in ",;":
            i += 1
    if closing is not None and i == len(tokens):
        raise ValueError(f"missing {closing!r}")
    return message, i


def _value(tokens: list[str], i: int) -> tuple[Any, int]:
    token = tokens[i]
    if token == "{":
        message, i = _message(tokens, i + 1, closing="}")
        return message, i + 1
    if token == "[":
        items, i = [], i + 1
        while tokens[i] != "]":
            item, i = _value(tokens, i)
            items.append(item)
            if tokens[i] == ",":
                i += 1
        return items, i + 1
    return _scalar(token), i + 1


def _scalar(token: str) -> Any:
    if token.startswith('"'):
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if token in ("true", "false"):
        return token == "true"
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token  # an enum name, e.g. TYPE_INT64 or KIND_GPU


def read(path: Path | str) -> dict[str, Any]:
    """The config file at ``path``, parsed."""
    return parse(Path(path).read_text(encoding="utf-8"))


def parameters(config: dict[str, Any]) -> dict[str, str]:
    """The model's ``parameters`` as key -> string value, from a parsed file (a list of key/value
    entries) or from the JSON form Triton hands model.py (a map of key -> {string_value})."""
    entries = config.get("parameters", [])
    if isinstance(entries, dict) and "key" not in entries:  # Triton's JSON form
        return {key: value["string_value"] for key, value in entries.items()}
    return {p["key"]: p["value"]["string_value"] for p in (entries if isinstance(entries, list) else [entries])}


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
    out.update({f"parameters.{key}": value for key, value in parameters(config).items()})
    return out


def limits(config: dict[str, Any]) -> TritonLimits:
    """``max_batch_size``, the dynamic batcher's ``max_queue_size`` (0: unbounded) and model.py's
    ``max_batch_tokens`` parameter, from a parsed file or Triton's JSON form."""
    queue = config.get("dynamic_batching", {}).get("default_queue_policy", {}).get("max_queue_size", 0)
    tokens = parameters(config).get("max_batch_tokens")
    if tokens is None:
        raise ValueError("the model config sets no max_batch_tokens parameter")
    return TritonLimits(int(config.get("max_batch_size", 0)), int(queue), int(tokens))
