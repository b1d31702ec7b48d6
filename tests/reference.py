"""The in-process reference: what the model gives for a pair with no service, batching or padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from ara_reranker_server.ranking import sigmoid


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
        self.tokenizer.truncation_side = side
        encoded = self.tokenizer([query], [document], truncation="only_second", max_length=max_length or self.max_length)
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


class Qwen3RerankerRecipe:
    """Qwen3-Reranker as its model card's transformers code runs it, the reference for the LLM reranker family:
    the tokenizer with left padding; each pair formatted as ``<Instruct>: ...\n<Query>: ...\n<Document>: ...``,
    tokenized with truncation to ``max_length`` less the prefix and suffix tokens, then framed by the chat prefix
    and the suffix's tokens (the empty think block); ``AutoModelForCausalLM`` on the left-padded batch, whose
    ``logits[:, -1, :]`` give logit("yes") - logit("no"); the card's score is softmax over (no, yes)'s "yes"."""

    PREFIX = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
        'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    )
    SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

    def __init__(self, model_dir: Path, max_length: int = 8192) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.max_length = max_length
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.prefix_tokens = self.tokenizer.encode(self.PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(self.SUFFIX, add_special_tokens=False)

    def format_instruction(self, instruction: str | None, query: str, doc: str) -> str:
        if instruction is None:
            instruction = self.DEFAULT_INSTRUCTION
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def process_inputs(self, pairs: list[str]):
        """The card's ``process_inputs``: truncated pairs framed by prefix and suffix tokens, left-padded."""
        inputs = self.tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                                max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens))
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)

    def encode(self, query: str, document: str, instruction: str | None = None) -> list[int]:
        """One pair's whole prompt as token ids (no padding): the row the gateway must send."""
        return self.process_inputs([self.format_instruction(instruction, query, document)])["input_ids"][0].tolist()

    def batch_logits(self, query: str, documents: list[str], instruction: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(logit("yes") - logit("no"), the card's score) of every document, all in one left-padded batch."""
        inputs = self.process_inputs([self.format_instruction(instruction, query, d) for d in documents])
        with torch.inference_mode():
            batch_scores = self.model(**inputs).logits[:, -1, :]
        true_vector, false_vector = batch_scores[:, self.token_true_id], batch_scores[:, self.token_false_id]
        card = torch.nn.functional.log_softmax(torch.stack([false_vector, true_vector], dim=1), dim=1)[:, 1].exp()
        return (true_vector - false_vector).numpy(), card.numpy()

    def logits(self, query: str, documents: list[str], instruction: str | None = None) -> np.ndarray:
        """logit("yes") - logit("no") of every document, the recipe's batch (left padding)."""
        return self.batch_logits(query, documents, instruction)[0]
