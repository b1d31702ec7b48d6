"""The LLM rerankers as their model cards run them, in-process: the reference the service must equal (and what a
``local:<model dir>`` evaluation target of such a model runs).

Qwen3-Reranker's card (transformers): the tokenizer with left padding; each pair formatted as
``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}`` (the default instruction when none is given),
tokenized with ``truncation="longest_first"`` to ``max_length`` less the prefix and suffix tokens, then framed by
the chat prefix (the system line, the user turn's start) and the suffix (the assistant turn with an empty think
block); ``AutoModelForCausalLM`` on the left-padded batch; ``logits[:, -1, :]`` gives logit("yes") - logit("no"),
and the card's score is the softmax over ("no", "yes") of "yes", which equals sigmoid of that difference.

Written from the card on purpose, not from the gateway's prompt code: a test comparing the two can fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["Qwen3RerankerRecipe"]


class Qwen3RerankerRecipe:
    """Qwen3-Reranker's documented recipe (see the module's doc), ``max_length`` tokens per whole prompt."""

    PREFIX = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
        'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    )
    SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

    def __init__(self, model_dir: Path | str, max_length: int = 8192, *, load_model: bool = True) -> None:
        """``load_model=False``: the prompts' tokens only (``encode``), e.g. for a benchmark feeding the served model."""
        import torch  # here, so that importing the evaluation package needs no torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval() if load_model else None
        self.max_length = max_length
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.prefix_tokens = self.tokenizer.encode(self.PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(self.SUFFIX, add_special_tokens=False)

    def format_instruction(self, instruction: str | None, query: str, doc: str) -> str:
        if instruction is None:
            instruction = self.DEFAULT_INSTRUCTION
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def process_inputs(self, pairs: Sequence[str]):
        """The card's ``process_inputs``: truncated pairs framed by prefix and suffix tokens, left-padded."""
        inputs = self.tokenizer(list(pairs), padding=False, truncation="longest_first", return_attention_mask=False,
                                max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens))
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        # The card also passes max_length=self.max_length here, which padding=True ignores (transformers warns).
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt")

    def encode(self, query: str, document: str, instruction: str | None = None) -> list[int]:
        """One pair's whole prompt as token ids, unpadded: the row a gateway sends to Triton."""
        return self.process_inputs([self.format_instruction(instruction, query, document)])["input_ids"][0].tolist()

    def batch_logits(self, query: str, documents: Sequence[str], instruction: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(logit("yes") - logit("no"), the card's score) of every document, all in one left-padded batch."""
        torch = self._torch
        inputs = self.process_inputs([self.format_instruction(instruction, query, d) for d in documents])
        with torch.inference_mode():
            # The card's model(**inputs).logits[:, -1, :], with the lm_head applied at the last position only
            # (logits_to_keep=1): the same values, without rows x length x 151,669 logits in memory.
            batch_scores = self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
        true_vector, false_vector = batch_scores[:, self.token_true_id], batch_scores[:, self.token_false_id]
        card = torch.nn.functional.log_softmax(torch.stack([false_vector, true_vector], dim=1), dim=1)[:, 1].exp()
        return (true_vector - false_vector).float().numpy(), card.float().numpy()

    def logits(self, query: str, documents: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """logit("yes") - logit("no") of every document (the logit the service ranks by)."""
        return self.batch_logits(query, documents, instruction)[0]
