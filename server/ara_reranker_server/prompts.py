"""The prompts of the causal-LM rerankers, as token ids: the tokens a (query, document) row starts and ends with,
exactly as each model's documented recipe builds them, so that only the document is tokenized per pair.

* Qwen3-Reranker (its model card's transformers code): ``prefix + tokens("<Instruct>: {instruction}\\n<Query>:
  {query}\\n<Document>: {document}") + suffix``, the middle text cut at its end to fit. Qwen's pre-tokenizer splits
  that text after ``"<Document>:"`` whatever the query and the document (``">:"`` is one piece that a space ends),
  and its BPE never merges across pieces, so the text's tokens are those of ``"<Instruct>: ...<Document>:"`` then
  those of ``" " + document``: the first once per request, the second once per document (``tests/test_prompts.py``
  holds this to the recipe's own call on Arabic and English, leading spaces, newlines, digits, empty documents).
* bge-reranker-v2-gemma (FlagEmbedding's ``FlagLLMReranker``): ``[bos] + tokens("A: {query}") + tokens("\\n") +
  tokens("B: {passage}")`` cut to ``max_length`` (the passage only), then ``tokens("\\n") + tokens(prompt)``; its
  optional prompt is this service's per-request instruction. Gemma's tokenizer has no pre-tokenizer, so each
  document is tokenized as the recipe does, ``"B: " + document`` whole.

Each family's row ends with the fixed suffix: a document is cut, or split into windows, inside the middle, never
into the suffix (the scored position is the last one: a cut suffix would silently change every score).
"""

from __future__ import annotations

from dataclasses import dataclass

from ara_reranker_model.families import GEMMA_RERANKER, QWEN3_RERANKER
from ara_reranker_server.errors import InvalidRequest

__all__ = ["Prompt", "PromptRow", "prompt_of", "QWEN3_PREFIX", "QWEN3_SUFFIX", "QWEN3_DEFAULT_INSTRUCTION",
           "GEMMA_DEFAULT_PROMPT"]

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
GEMMA_DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by providing "
    "a prediction of either 'Yes' or 'No'."
)
GEMMA_SEPARATOR = "\n"


@dataclass(frozen=True)
class PromptRow:
    """One request's rows: ``prefix + document ids + suffix``; the document's ids are those of ``lead + document``
    (``lead`` is ``len(lead)`` characters written before the document); ``room``: document tokens a row holds."""

    prefix: list[int]
    suffix: list[int]
    room: int


@dataclass(frozen=True)
class Prompt:
    """A causal-LM reranker family's prompt over the served model's ``tokenizers.Tokenizer``."""

    family: str
    tokenizer: object
    max_length: int
    bos_id: int | None = None

    @property
    def default_instruction(self) -> str:
        return QWEN3_DEFAULT_INSTRUCTION if self.family == QWEN3_RERANKER else GEMMA_DEFAULT_PROMPT

    @property
    def lead(self) -> str:
        """What the recipe writes right before the document and tokenizes with it."""
        return " " if self.family == QWEN3_RERANKER else "B: "

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def row(self, query: str, instruction: str | None) -> PromptRow:
        """The tokens around every document of a request; InvalidRequest when the instruction and the query leave
        no room for a document token (the recipe would cut into them)."""
        instruction = instruction or self.default_instruction
        if self.family == QWEN3_RERANKER:
            prefix = self._ids(QWEN3_PREFIX) + self._ids(f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:")
            suffix = self._ids(QWEN3_SUFFIX)
            room = self.max_length - len(prefix) - len(suffix)
        else:
            query_ids = self._ids(f"A: {query}")
            separator = self._ids(GEMMA_SEPARATOR)
            suffix = separator + self._ids(instruction)
            # The recipe's max_length bounds the row without its suffix; it cuts the query to 3/4 of it, silently:
            # here a query that long is refused instead, as any query that leaves no room.
            limit = self.max_length - len(suffix)
            if len(query_ids) > limit * 3 // 4:
                raise InvalidRequest(
                    f"query has {len(query_ids)} tokens with its 'A: ' label; with this instruction "
                    f"({len(suffix)} tokens with its separator) it may have at most {max(0, limit * 3 // 4)} "
                    f"(max input length {self.max_length})"
                )
            prefix = ([self.bos_id] if self.bos_id is not None else []) + query_ids + separator
            room = limit - len(prefix)
        if room < 1:
            raise InvalidRequest(
                f"instruction and query make {len(prefix) + len(suffix)} tokens of the prompt; with a document the "
                f"model takes at most {self.max_length}: shorten the instruction or the query"
            )
        return PromptRow(prefix, suffix, room)


def prompt_of(family: str, tokenizer, max_length: int, bos_id: int | None = None) -> Prompt | None:
    """The prompt of a causal-LM family (None for a cross-encoder, whose pairs are its post-processor's)."""
    if family in (QWEN3_RERANKER, GEMMA_RERANKER):
        return Prompt(family, tokenizer, max_length, bos_id)
    return None
