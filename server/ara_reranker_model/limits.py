"""How long a (query, document) pair a served cross-encoder takes: the one definition of that rule.

Two files of a Hugging Face model directory say it: ``config.json`` (``max_position_embeddings``, what
the model can compute) and ``tokenizer_config.json`` (``model_max_length``, what the model was trained
and is used with; sentence-transformers' ``CrossEncoder`` truncates there). ARA-Reranker-V1, a
bge-reranker-v2-m3 fine-tune, has 8194 positions and ``model_max_length`` 8192: XLM-R style models
reserve ``pad_token_id + 1`` position slots, so 8192 tokens are usable.

The causal-LM rerankers (families.py) are used with their documented recipe's ``max_length``
(:data:`RECIPE_MAX_LENGTH`): Qwen3-Reranker's card truncates the whole prompt at 8192 tokens, although its tokenizer
says 131072 (the base Qwen3's extrapolated context) and its config 40960 positions; bge-reranker-v2-gemma's card cuts
the "A: query" / "B: passage" part at 1024 and then appends a newline and its instruction prompt, so its rows may
be longer by that (:data:`RECIPE_SUFFIX_ROOM`).

Also the one rule for whether a model reads token type ids (:func:`takes_token_type_ids`): BERT-style
cross-encoders (ms-marco MiniLM) mark the document with token type 1; XLM-R / RoBERTa have one type.

And the one list of limits that must agree with each other across the gateway and Triton
(:data:`COUPLED_LIMITS`, checked by :func:`coupled_limit_problems` wherever some of them are known at
start: the gateway's settings, model.py, ``make run``, the deployment tests).

Used by the gateway (its max input length, which inputs to send), model.py (the longest row it accepts,
its inputs), the engines, the ONNX export and the benchmarks. Plain Python on purpose: Triton's Python
backend imports it too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ara_reranker_model.families import CROSS_ENCODER, GEMMA_RERANKER, QWEN3_RERANKER, family_of

__all__ = [
    "ROBERTA_LIKE",
    "UNSET_MAX_LENGTH",
    "ModelLimitError",
    "CoupledLimit",
    "COUPLED_LIMITS",
    "coupled_limit_problems",
    "reserved_positions",
    "max_positions",
    "RECIPE_MAX_LENGTH",
    "RECIPE_SUFFIX_ROOM",
    "max_row_length",
    "tokenizer_max_length",
    "max_input_length",
    "type_vocab_size",
    "takes_token_type_ids",
    "input_names",
]

# Model types whose position ids start after the padding index (pad_token_id + 1 slots are reserved).
ROBERTA_LIKE = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert"})
# transformers writes a huge model_max_length (int(1e30)) when a tokenizer has none configured.
UNSET_MAX_LENGTH = 1_000_000


class ModelLimitError(ValueError):
    """The model directory's files disagree, or a requested limit is beyond what the model takes."""


def reserved_positions(model_type: str | None, pad_token_id: int | None = 1) -> int:
    """Position slots a model of ``model_type`` never gives a token: RoBERTa-likes start counting
    positions after the padding index, so ``pad_token_id + 1`` of them; others none."""
    return int(1 if pad_token_id is None else pad_token_id) + 1 if model_type in ROBERTA_LIKE else 0


def max_positions(config: Mapping[str, Any]) -> int:
    """Longest sequence the position embeddings of ``config`` (config.json as a dict) allow."""
    return int(config["max_position_embeddings"]) - reserved_positions(config.get("model_type"), config.get("pad_token_id", 1))


# The whole prompt's max tokens in each causal-LM family's documented recipe (its model card's transformers code:
# prefix + truncated pair + suffix): what the service scores with, so that scores equal the recipe's.
RECIPE_MAX_LENGTH = {QWEN3_RERANKER: 8192, GEMMA_RERANKER: 1024}
# Tokens a row may hold beyond RECIPE_MAX_LENGTH: bge-reranker-v2-gemma's recipe appends "\n" and its instruction
# prompt (about 30 Gemma tokens by default) after the part it cuts at 1024; Qwen3's recipe length is the whole row.
RECIPE_SUFFIX_ROOM = {QWEN3_RERANKER: 0, GEMMA_RERANKER: 64}


def max_row_length(config: Mapping[str, Any]) -> int:
    """Longest token row the model of ``config`` scores: its position embeddings' limit for a cross-encoder; for a
    causal-LM reranker the longest its recipe makes (:data:`RECIPE_MAX_LENGTH` + :data:`RECIPE_SUFFIX_ROOM`), or its
    positions if fewer."""
    family = family_of(config)
    if family == CROSS_ENCODER:
        return max_positions(config)
    return min(max_positions(config), RECIPE_MAX_LENGTH[family] + RECIPE_SUFFIX_ROOM[family])


def type_vocab_size(config: Mapping[str, Any]) -> int:
    """How many token types the model of ``config`` (config.json as a dict) embeds; 1 when it says none."""
    return int(config.get("type_vocab_size") or 1)


def takes_token_type_ids(config: Mapping[str, Any]) -> bool:
    """Whether the model must be given ``token_type_ids`` to score as it does in-process (the tokenizer's
    types: 0 for the query, 1 for the document); models with one type ignore them."""
    return type_vocab_size(config) > 1


def input_names(config: Mapping[str, Any]) -> list[str]:
    """The token arrays the model of ``config`` is given, in this order (model.py, the ONNX graph)."""
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_token_type_ids(config) else [])


def tokenizer_max_length(tokenizer_config: Mapping[str, Any]) -> int | None:
    """``model_max_length`` of tokenizer_config.json, or None when absent or transformers' "unset"."""
    value = tokenizer_config.get("model_max_length")
    if value is None or float(value) >= UNSET_MAX_LENGTH:
        return None
    return int(value)


@dataclass(frozen=True)
class CoupledLimit:
    """A rule that two or more limits, set in different places, must keep together."""

    limits: tuple[str, ...]  # the names it couples: gateway settings, Triton config fields, the model's length
    holds: Callable[..., bool]  # called with those limits as keyword arguments
    rule: str  # the rule, as the docs state it
    why: str  # what breaks otherwise, and who enforces it


COUPLED_LIMITS: tuple[CoupledLimit, ...] = (
    CoupledLimit(
        ("max_documents", "max_inflight_pairs"), lambda max_documents, max_inflight_pairs: max_inflight_pairs >= max_documents,
        "max_inflight_pairs >= max_documents",
        "a request of max_documents documents could never be admitted; the gateway refuses to start",
    ),
    CoupledLimit(
        ("chunk_size", "max_batch_size"), lambda chunk_size, max_batch_size: chunk_size <= max_batch_size,
        "chunk_size <= Triton's max_batch_size",
        "Triton refuses a request of more rows than max_batch_size; the gateway lowers chunk_size to it, with a warning",
    ),
    CoupledLimit(
        ("chunk_size", "max_inflight_pairs", "max_queue_size"),
        lambda chunk_size, max_inflight_pairs, max_queue_size: max_queue_size == 0
        or math.ceil(max_inflight_pairs / chunk_size) <= max_queue_size,
        "max_inflight_pairs / chunk_size <= Triton's max_queue_size",
        "the gateway's admission bound should bite before Triton's queue does: the full chunks one gateway admits "
        "at once fit the queue (many small calls, each ending in a part chunk, can still fill it: Triton then "
        "refuses and the caller gets RESOURCE_EXHAUSTED all the same)",
    ),
    CoupledLimit(
        ("max_batch_tokens", "max_input_length"), lambda max_batch_tokens, max_input_length: max_batch_tokens >= max_input_length,
        "Triton's max_batch_tokens >= the model's max input length",
        "the longest row must fit one forward pass; model.py refuses to load otherwise",
    ),
)


def coupled_limit_problems(values: Mapping[str, int]) -> list[str]:
    """Every rule of COUPLED_LIMITS whose limits are all in ``values`` and that does not hold, as a
    sentence naming the rule, the values and the consequence; empty when they fit together."""
    problems = []
    for limit in COUPLED_LIMITS:
        if all(name in values for name in limit.limits) and not limit.holds(**{n: values[n] for n in limit.limits}):
            given = ", ".join(f"{name}={values[name]}" for name in limit.limits)
            problems.append(f"{limit.rule} does not hold ({given}): {limit.why}")
    return problems


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def max_input_length(model_dir: Path | str, requested: int = 0) -> int:
    """The max tokens of a pair for the model in ``model_dir``: the tokenizer's ``model_max_length`` (a causal-LM
    reranker's: its recipe's, :func:`max_row_length`), lowered to ``requested`` when that is set (> 0).

    Raises ModelLimitError when the tokenizer allows more than the position embeddings hold (the model
    would fail or silently mis-score long pairs), when the directory says nothing usable, or when
    ``requested`` exceeds the model's limit."""
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json") or {}
    positions = max_positions(config) if config else None
    tokenizer = tokenizer_max_length(tokenizer_config)
    if config and family_of(config) != CROSS_ENCODER:
        # The recipe's length, not the tokenizer's (Qwen3's 131072 exceeds its 40960 positions by design).
        tokenizer = positions = max_row_length(config)
    if tokenizer is not None and positions is not None and tokenizer > positions:
        raise ModelLimitError(
            f"{model_dir}: tokenizer_config.json model_max_length={tokenizer} exceeds the {positions} tokens the "
            f"model's position embeddings hold (config.json max_position_embeddings={config['max_position_embeddings']}); "
            "fix the model directory"
        )
    limit = tokenizer or positions
    if limit is None:
        raise ModelLimitError(f"{model_dir}: neither config.json nor tokenizer_config.json says the max input length")
    if requested < 0:
        raise ModelLimitError(f"max_input_length must be >= 0 (0: the model's {limit}); got {requested}")
    if requested > limit:
        raise ModelLimitError(f"max_input_length={requested} exceeds what {model_dir.name} takes ({limit} tokens)")
    return requested or limit
