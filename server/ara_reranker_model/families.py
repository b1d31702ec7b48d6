"""Which kind of reranker a model directory holds, from its ``config.json``: the one rule, read by the gateway
(how a pair becomes tokens) and by the Triton model (how a row becomes a logit).

* ``cross-encoder``: a sequence-classification encoder (XLM-R, BERT) whose one output logit is the score.
* ``qwen3-reranker``: Qwen3-Reranker (a Qwen3 causal LM). The pair is Qwen3-Reranker's chat prompt; the logit is
  ``logit("yes") - logit("no")`` at the last position of the row.
* ``gemma-reranker``: bge-reranker-v2-gemma (a Gemma causal LM). The pair is its "A: / B: / prompt" text; the
  logit is ``logit("Yes")`` at the last position.

The contract between the two sides: the gateway sends each row's whole prompt as token ids, right-padded with the
tokenizer's pad id and an attention mask; the model scores the last attended position of each row. Plain Python on
purpose: Triton's Python backend imports it too.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["CROSS_ENCODER", "QWEN3_RERANKER", "GEMMA_RERANKER", "FAMILIES", "ANSWER_TOKENS", "family_of", "is_causal_lm"]

CROSS_ENCODER = "cross-encoder"
QWEN3_RERANKER = "qwen3-reranker"
GEMMA_RERANKER = "gemma-reranker"
FAMILIES = (CROSS_ENCODER, QWEN3_RERANKER, GEMMA_RERANKER)

# The tokens whose logits at the last position make a causal-LM reranker's logit: the first's minus the second's
# when there are two (Qwen3-Reranker: "yes" - "no"), else the first's (bge-reranker-v2-gemma: "Yes").
ANSWER_TOKENS = {QWEN3_RERANKER: ("yes", "no"), GEMMA_RERANKER: ("Yes",)}

# config.json's model_type -> family, for the causal LMs served as rerankers.
_CAUSAL_LM_TYPES = {"qwen3": QWEN3_RERANKER, "gemma": GEMMA_RERANKER}


def family_of(config: Mapping[str, Any]) -> str:
    """The reranker family of a model whose ``config.json`` is ``config``."""
    family = _CAUSAL_LM_TYPES.get(str(config.get("model_type", "")))
    if family is not None:
        return family
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForCausalLM") for a in architectures):
        raise ValueError(
            f"model_type {config.get('model_type')!r} ({', '.join(architectures)}) is a causal LM this service "
            f"does not know how to rerank with; known: {', '.join(sorted(_CAUSAL_LM_TYPES))}"
        )
    return CROSS_ENCODER


def is_causal_lm(config: Mapping[str, Any]) -> bool:
    """Whether the model is one of the causal-LM reranker families (scored at the last position)."""
    return family_of(config) != CROSS_ENCODER
