"""The in-process reference: what the model gives for a pair with no service, batching or padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ara_reranker_server.ranking import sigmoid
from client.evaluation.recipes import Qwen3RerankerRecipe

__all__ = ["InProcessReference", "Qwen3RerankerRecipe"]


class InProcessReference:
    """transformers ``AutoModelForSequenceClassification`` run on one pair at a time (no padding at
    all), document truncated to the model's max length, as sentence-transformers' CrossEncoder does.

    The model is given the tokenizer's whole encoding: BERT-style models (ms-marco MiniLM) also read its
    ``token_type_ids`` (query 0, document 1); XLM-R tokenizers return none."""

    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.max_length = self.tokenizer.model_max_length

    def encode(self, query: str, document: str, max_length: int | None = None, side: str = "right") -> list[int]:
        """Token ids of the pair, document truncated (never the query) to ``max_length`` (default: the
        tokenizer's), as ``CrossEncoder(model, max_length=...)`` does.

        Encoded as a batch of one pair, as CrossEncoder.predict does: a single call with an empty
        document would drop the pair template (``text_pair=""`` is falsy)."""
        return self.encoding(query, document, max_length, side)["input_ids"]

    def encoding(self, query: str, document: str, max_length: int | None = None, side: str = "right") -> dict[str, list[int]]:
        """The pair's ``input_ids`` and, where the tokenizer makes them, ``token_type_ids`` (as ``encode``);
        ``side="left"``: a long document loses its start instead of its end (transformers' truncation_side)."""
        kept, self.tokenizer.truncation_side = self.tokenizer.truncation_side, side
        try:  # the session's tokenizer is shared: others (transformers_windows) call it with their own defaults
            encoded = self.tokenizer([query], [document], truncation="only_second", max_length=max_length or self.max_length)
        finally:
            self.tokenizer.truncation_side = kept
        return {key: encoded[key][0] for key in ("input_ids", "token_type_ids") if key in encoded}

    def logits_of_encodings(self, encodings: list[dict[str, list[int]]]) -> np.ndarray:
        """Logits of whole encodings (token type ids included), one unpadded pair at a time."""
        with torch.inference_mode():
            return np.array(
                [self.model(**{k: torch.tensor([v]) for k, v in e.items()}).logits[0, 0].item() for e in encodings],
                dtype=np.float32,
            )

    def logits_of_ids(self, rows: list[list[int]]) -> np.ndarray:
        with torch.inference_mode():
            return np.array(
                [self.model(input_ids=torch.tensor([row])).logits[0, 0].item() for row in rows], dtype=np.float32
            )

    def logits(self, query: str, documents: list[str], max_length: int | None = None, side: str = "right") -> np.ndarray:
        return self.logits_of_encodings([self.encoding(query, d, max_length, side) for d in documents])

    def capped(self, query: str, document: str, document_tokens: int) -> list[int]:
        """Token ids of the pair with the document cut to its first ``document_tokens`` tokens (Cohere's
        max_tokens_per_doc): the pair truncated to the query, the special tokens and that many more."""
        query_tokens = len(self.tokenizer(query, add_special_tokens=False)["input_ids"])
        return self.encode(query, document, query_tokens + self.tokenizer.num_special_tokens_to_add(pair=True) + document_tokens)

    def scores(self, query: str, documents: list[str], max_length: int | None = None, side: str = "right") -> np.ndarray:
        """sigmoid(logit) in float32, the service's default score."""
        return sigmoid(self.logits(query, documents, max_length, side))

