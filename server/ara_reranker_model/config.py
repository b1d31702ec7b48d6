"""Triton's configuration of a model as model.py receives it (``json.loads(args["model_config"])``) and as
``google.protobuf.json_format`` writes a ``ModelConfig`` message: its parameters and the limits the gateway's
must agree with. Standard library only: the Triton model imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["TritonLimits", "parameters", "limits"]


@dataclass(frozen=True)
class TritonLimits:
    """The Triton-side limits the gateway's must agree with (see ara_reranker_model.limits.COUPLED_LIMITS)."""

    max_batch_size: int
    max_queue_size: int
    max_batch_tokens: int


def parameters(config: dict[str, Any]) -> dict[str, str]:
    """The model's ``parameters`` as key -> string value (a map of key -> {string_value} in the JSON form)."""
    return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}


def limits(config: dict[str, Any]) -> TritonLimits:
    """``max_batch_size``, the dynamic batcher's ``max_queue_size`` (0: unbounded) and model.py's
    ``max_batch_tokens`` parameter."""
    queue = config.get("dynamic_batching", {}).get("default_queue_policy", {}).get("max_queue_size", 0)
    tokens = parameters(config).get("max_batch_tokens")
    if tokens is None:
        raise ValueError("the model config sets no max_batch_tokens parameter")
    return TritonLimits(int(config.get("max_batch_size", 0)), int(queue), int(tokens))
