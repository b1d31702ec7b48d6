"""PairTemplate: a pair assembled as prefix + document ids + suffix is exactly the post-processor's pair (ids and
token types), for the XLM-R tokenizer (the served model's) and the BERT WordPiece one (token types 0/1), whatever
the query, the document's length, truncation or windows."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from ara_reranker_model.bert_vocab import bert_uncased_tokenizer_json
from ara_reranker_server.core_types import RerankJob
from ara_reranker_server.tokenization import PairTemplate, PairTokenizer
from ara_reranker_server.windows import Split, resolve
from tools.arabic_text import QUERIES, long_passage, mixed_passages

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module", params=["xlm-r", "bert"])
def raw_tokenizer(request, tiny_model_dir) -> Tokenizer:
    if request.param == "xlm-r":
        return Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    return Tokenizer.from_str(bert_uncased_tokenizer_json())


def post_processed(tokenizer: Tokenizer, query: str, document_encoding) -> tuple[list[int], list[int]]:
    joined = tokenizer.post_process(tokenizer.encode(query, add_special_tokens=False), document_encoding, add_special_tokens=True)
    return joined.ids, joined.type_ids


@pytest.mark.parametrize("query", [QUERIES[0], "q", "What is the capital of France?"])
def test_the_template_gives_the_post_processors_pair(raw_tokenizer, query, rng):
    probe = raw_tokenizer.encode("probe text 1", add_special_tokens=False)
    template = PairTemplate.of(raw_tokenizer.post_process(raw_tokenizer.encode(query, add_special_tokens=False), probe,
                                                          add_special_tokens=True), probe.ids)
    assert template is not None
    for document in mixed_passages(rng, 8) + ["", " ", "x"]:
        encoding = raw_tokenizer.encode(document, add_special_tokens=False)
        assert (template.ids(encoding.ids), template.types(len(encoding.ids))) == post_processed(raw_tokenizer, query, encoding)


def test_a_post_processor_that_changes_the_document_gets_no_template(raw_tokenizer):
    probe = raw_tokenizer.encode("probe text 1", add_special_tokens=False)
    joined = raw_tokenizer.post_process(raw_tokenizer.encode("q", add_special_tokens=False), probe, add_special_tokens=True)
    assert PairTemplate.of(joined, probe.ids[::-1] + [7]) is None  # the probe's tokens are not what the pair holds


@pytest.mark.parametrize("truncate_from_start", [False, True])
def test_pair_tokenizer_pairs_and_windows_equal_the_post_processors(raw_tokenizer, truncate_from_start, rng):
    types = json.loads(raw_tokenizer.to_str())["model"]["type"] == "WordPiece"  # BERT-style: send token types
    tok = PairTokenizer(raw_tokenizer, max_length=64, pad_id=0, threads=1, token_type_ids=types)
    documents = mixed_passages(rng, 6) + [long_passage(rng), ""]
    query_encoding, room = tok.room(QUERIES[1])
    job = RerankJob(QUERIES[1], documents, from_start=truncate_from_start)
    got = tok.encode_slice(query_encoding, room, None, documents, job, range(len(documents)))
    expected = []
    for document in documents:
        encoding = raw_tokenizer.encode(document, add_special_tokens=False)
        encoding.truncate(room, direction="left" if truncate_from_start else "right")
        expected.append(post_processed(raw_tokenizer, QUERIES[1], encoding))
    assert got.pairs == [ids for ids, _ in expected]
    assert got.types == ([t for _, t in expected] if types else None)

    windows = resolve(Split(overlap_tokens=8, max_windows=4), tok.max_length, tok.special_tokens + len(query_encoding.ids), 1000)
    page = long_passage(rng)
    split = tok.encode_windows(query_encoding, windows, [page])
    whole = raw_tokenizer.encode(page, add_special_tokens=False)
    whole.truncate(windows.room, stride=windows.overlap)
    parts = [post_processed(raw_tokenizer, QUERIES[1], part) for part in [whole, *whole.overflowing][:4]]
    assert len(parts) == 4 and split.pairs == [ids for ids, _ in parts]
    assert split.types == ([t for _, t in parts] if types else None)
