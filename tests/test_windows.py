"""TRUNCATION_SPLIT: every window of a long document scored, the document ranked by its best one.

The windows must be exactly transformers' overflowing pairs (``truncation="only_second"``, ``stride``,
``return_overflowing_tokens=True``) and the score the in-process model's best over them; end to end
through the real gateway and tritonserver (session fixtures), and in the core for a BERT-style model's
token type ids."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_client.cli import main as cli_main
from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc
from ara_reranker_server.core_types import Limits, RerankJob
from ara_reranker_server.errors import InvalidRequest
from ara_reranker_server.models import load_tokenizer
from ara_reranker_server.reranking import Reranker
from ara_reranker_server.windows import Split, best_rows
from client.evaluation import ServiceRanker, Truncation
from client.evaluation.__main__ import main as evaluation_main
from tests.reference import InProcessReference
from tools.arabic_text import QUERIES, SENTENCES, mixed_passages, passage

TOL = 1e-4
WINDOW = 64  # small windows keep the tests fast; the rules do not depend on the size
OVERLAP = 16
MAX_WINDOWS = 4
ONE_TOKEN_WORD = "في"  # one XLM-R token, so " ".join of n of them is exactly n tokens
DIACRITICS = "تَطْبِيقَاتُ الذَّكَاءِ الاصْطِنَاعِيِّ تُسْتَخْدَمُ فِي مُخْتَلِفِ المَجَالَاتِ"
TATWEEL = "العـــــربية جمـــيلة والكتـــابة فـــن"
MIXED = "نموذج XLM-RoBERTa يدعم 100 لغة (multilingual) مثل العربية و English و français 🙂"


def transformers_windows(reference: InProcessReference, query: str, document: str, window_tokens: int, overlap: int,
                         max_windows: int | None = None):
    """transformers' overflowing pairs of (query, document), the first ``max_windows``: each one's
    encoding (ids, token type ids) and the character span of its document tokens."""
    out = reference.tokenizer([query], [document], truncation="only_second", max_length=window_tokens, stride=overlap,
                              return_overflowing_tokens=True, return_offsets_mapping=True)
    windows = []
    for w in range(len(out["input_ids"])):
        encoding = {k: out[k][w] for k in ("input_ids", "token_type_ids") if k in out}
        offsets = [o for o, s in zip(out["offset_mapping"][w], out.sequence_ids(w)) if s == 1]
        windows.append((encoding, (offsets[0][0], offsets[-1][1]) if offsets else (0, 0), offsets))
    return windows if max_windows is None else windows[:max_windows], len(windows)


def words(n: int) -> str:
    return " ".join([ONE_TOKEN_WORD] * n)


@pytest.fixture(scope="module")
def stub(gateway):
    channel = grpc.insecure_channel(gateway.target)
    yield reranker_pb2_grpc.RerankerStub(channel)
    channel.close()


@pytest.fixture(scope="module")
def room(reference) -> int:
    """Document tokens a WINDOW-token window holds beside QUERIES[0]."""
    specials = reference.tokenizer.num_special_tokens_to_add(pair=True)
    return WINDOW - specials - len(reference.tokenizer(QUERIES[0], add_special_tokens=False)["input_ids"])


def split_request(query, documents, **fields) -> reranker_pb2.RerankRequest:
    fields = {"window_tokens": WINDOW, "window_overlap_tokens": OVERLAP, "max_windows": MAX_WINDOWS} | fields
    return reranker_pb2.RerankRequest(query=query, documents=documents, truncation=reranker_pb2.TRUNCATION_SPLIT,
                                      raw_scores=True, **fields)


def check_parity(reference, query, documents, response, window_tokens=WINDOW, overlap=OVERLAP, max_windows=MAX_WINDOWS):
    """Each document's logit is the best of the in-process model's logits over transformers' windows,
    best_window names that window and its span; usage counts the windows and the cut documents."""
    by_index = {r.index: r for r in response.results}
    assert sorted(by_index) == list(range(len(documents)))
    windows_scored = truncated = 0
    for i, document in enumerate(documents):
        windows, total = transformers_windows(reference, query, document, window_tokens, overlap, max_windows)
        windows_scored += len(windows)
        truncated += total > max_windows
        logits = reference.logits_of_encodings([encoding for encoding, _, _ in windows])
        got = by_index[i]
        assert got.HasField("best_window")
        assert abs(got.logit - logits.max()) <= TOL, (i, got.logit, logits)
        w = got.best_window.index
        assert w < len(windows) and abs(logits[w] - logits.max()) <= TOL  # the argmax (or a float-noise tie)
        runner_up = np.sort(logits)[-2] if len(logits) > 1 else -np.inf
        if logits.max() - runner_up > 10 * TOL:  # a clear winner: exactly its window
            assert w == int(np.argmax(logits))
        span, offsets = windows[w][1], windows[w][2]
        assert (got.best_window.start_char, got.best_window.end_char) == span
        assert 0 <= span[0] <= span[1] <= len(document)
        check_span_text(document, span, offsets)
    assert response.usage.windows == windows_scored
    assert response.usage.truncated_documents == truncated
    assert response.usage.documents == len(documents)


def check_span_text(document: str, span: tuple[int, int], offsets) -> None:
    """The span is the text of the window's document tokens: it starts at the first token and ends at
    the last, and every token's text lies inside it (all the window's tokens and nothing more)."""
    start, end = span
    if not offsets:
        assert span == (0, 0)
        return
    assert all(start <= a <= b <= end for a, b in offsets)
    text = document[start:end]
    assert text and text == text.strip()  # a span starts and ends at a token's text, not at a space
    covered = {p for a, b in offsets for p in range(a, b)}
    assert {p for p in range(start, end) if not document[p].isspace()} <= covered


def test_split_scores_are_the_best_of_transformers_windows_for_every_length(stub, reference, room, rng):
    """One window, exactly at the boundary, one token over it, many windows, more than max_windows."""
    query = QUERIES[0]
    documents = [
        words(3), words(room - 1), words(room), words(room + 1),
        passage(rng, 4), passage(rng, 9), passage(rng, 40), words(3 * room), passage(rng, 120),
    ]
    response = stub.Rerank(split_request(query, documents))
    check_parity(reference, query, documents, response)
    counts = [len(transformers_windows(reference, query, d, WINDOW, OVERLAP)[0]) for d in documents]
    assert counts[:4] == [1, 1, 1, 2]  # the boundary: room tokens fit, room + 1 do not
    assert max(counts) > MAX_WINDOWS  # and some are cut
    assert response.usage.truncated_documents >= 1


def test_the_reference_leaves_its_shared_tokenizer_as_it_found_it(reference):
    """The session's reference tokenizer is shared by every module: a left-truncated encoding must not leave it
    truncating from the left for the next caller (transformers_windows reads its default side)."""
    before = reference.tokenizer.truncation_side
    reference.encoding(QUERIES[0], passage(np.random.default_rng(0), 200), 64, side="left")
    assert reference.tokenizer.truncation_side == before == "right"


def test_empty_and_one_token_documents_are_one_window(stub, reference):
    query = QUERIES[1]
    documents = ["", ONE_TOKEN_WORD, "a", " ", words(2)]
    response = stub.Rerank(split_request(query, documents))
    check_parity(reference, query, documents, response)
    assert all(r.best_window.index == 0 for r in response.results)
    empty = next(r for r in response.results if r.index == 0)
    assert (empty.best_window.start_char, empty.best_window.end_char) == (0, 0)


def test_arabic_diacritics_tatweel_and_mixed_scripts_across_window_boundaries(stub, reference):
    query = "تطبيقات الذكاء الاصطناعي"
    documents = [
        " ".join([DIACRITICS, TATWEEL, MIXED] * 6),
        " ".join([MIXED, DIACRITICS] * 5) + " " + SENTENCES[2],
        TATWEEL * 8,
        (MIXED + " ") * 7,
    ]
    for window_tokens, overlap in ((48, 8), (80, 30)):
        response = stub.Rerank(split_request(query, documents, window_tokens=window_tokens, window_overlap_tokens=overlap))
        check_parity(reference, query, documents, response, window_tokens, overlap)
        assert response.usage.windows > len(documents)  # the boundaries do fall inside these texts


def test_a_document_that_fits_scores_as_with_truncation_end(client, reference, rng):
    """Default window_tokens (the model's max length): short documents are one window, whose span is
    the whole document (stripped), and their scores equal TRUNCATION_END's."""
    query = QUERIES[2]
    documents = mixed_passages(rng, 10)
    split = {r.index: r for r in client.rerank(query, documents, split=True)}
    end = {r.index: r for r in client.rerank(query, documents, truncation="end")}
    for i, document in enumerate(documents):
        assert abs(split[i].logit - end[i].logit) <= TOL and end[i].best_window is None
        assert split[i].best_window.index == 0
        assert document[split[i].best_window.start_char : split[i].best_window.end_char] == document.strip()
    np.testing.assert_allclose([split[i].logit for i in range(10)], reference.logits(query, documents), atol=TOL, rtol=0)


def test_the_client_ranks_split_documents_by_their_best_window_with_its_text(client, reference, rng):
    query = QUERIES[3]
    documents = [passage(rng, 30) for _ in range(3)] + [SENTENCES[4]]
    results = client.rerank(query, documents, truncation="split", window_tokens=WINDOW, window_overlap_tokens=OVERLAP,
                            max_windows=MAX_WINDOWS, return_documents=True, raw_scores=True)
    logits = [r.logit for r in results]
    assert logits == sorted(logits, reverse=True)
    for r in results:
        windows, _ = transformers_windows(reference, query, documents[r.index], WINDOW, OVERLAP, MAX_WINDOWS)
        assert (r.best_window.start_char, r.best_window.end_char) == windows[r.best_window.index][1]
        assert r.document[r.best_window.start_char : r.best_window.end_char].strip()


def test_window_settings_are_checked_and_named(client, room):
    def error(**kwargs) -> RerankerError:
        with pytest.raises(RerankerError) as caught:
            client.rerank(QUERIES[0], [words(10)], **kwargs)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        return caught.value

    assert "only with TRUNCATION_SPLIT" in error(window_tokens=64).details
    assert "window_tokens=9000" in error(split=True, window_tokens=9000).details
    assert "window_overlap_tokens=" in error(split=True, window_tokens=WINDOW, window_overlap_tokens=room).details
    assert "window_tokens=8" in error(split=True, window_tokens=8).details  # no room beside the query
    assert "max_windows=0" in error(split=True, max_windows=0).details
    with pytest.raises(ValueError):
        client.rerank(QUERIES[0], ["x"], truncate=False, split=True)


class EncodingScorer:
    """The model in-process on each unpadded row, token type ids included when given."""

    def __init__(self, reference: InProcessReference) -> None:
        self.reference = reference

    async def score(self, input_ids, attention_mask, deadline, token_type_ids=None, priority="interactive"):
        rows = []
        for j, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            row = {"input_ids": list(ids[mask == 1])}
            if token_type_ids is not None:
                row["token_type_ids"] = list(token_type_ids[j][mask == 1])
            rows.append(row)
        return self.reference.logits_of_encodings(rows)


LIMITS = Limits(max_documents=100, max_query_chars=5000, max_document_chars=100000, chunk_size=8,
                max_inflight_pairs=100, max_windows=30)


@pytest.fixture(scope="module")
def bert():
    from ara_reranker_model.store import prepare

    directory = prepare("bert-tiny")
    return InProcessReference(directory), load_tokenizer(str(directory), 0, 1)


def test_bert_windows_carry_the_documents_token_types_in_every_window(bert, rng):
    """BERT-style models: transformers gives the document type 1 in every window, not only the first."""
    reference, tokenizer = bert
    query = "what is the capital of saudi arabia"
    documents = ["riyadh is the capital " * 40, "short one", "", passage(rng, 6)]
    reranker = Reranker(tokenizer, EncodingScorer(reference), LIMITS, default_timeout_s=30)
    job = RerankJob(query, documents, raw_scores=True, split=Split(40, 10, 5))
    outcome = asyncio.run(reranker.rerank(job))
    for r in outcome.results:
        windows, _ = transformers_windows(reference, query, documents[r.index], 40, 10, 5)
        logits = reference.logits_of_encodings([e for e, _, _ in windows])
        assert abs(r.logit - logits.max()) <= TOL
        assert (r.window.start_char, r.window.end_char) == windows[r.window.index][1]
    assert outcome.windows == sum(len(transformers_windows(reference, query, d, 40, 10, 5)[0]) for d in documents)


def test_too_many_windows_in_one_request_are_refused_naming_the_limit(bert):
    reference, tokenizer = bert
    reranker = Reranker(tokenizer, EncodingScorer(reference), LIMITS, default_timeout_s=30)
    job = RerankJob("query", ["word " * 400] * 10, split=Split(40, 10, 5))
    with pytest.raises(InvalidRequest, match="max_windows_per_request=30"):
        asyncio.run(reranker.rerank(job))
    assert reranker.admission.in_flight == 0


def test_best_window_ties_keep_the_lower_window():
    owners = np.array([0, 0, 0, 1, 2, 2])
    logits = np.array([1.0, 3.0, 3.0, -1.0, 5.0, 5.0], dtype=np.float32)
    assert list(best_rows(logits, owners, 3)) == [1, 3, 4]


def test_the_evaluation_harness_scores_with_the_chosen_truncation(gateway, reference, rng, tmp_path, capsys):
    """``--truncation split`` ranks each passage by its best window: the harness's scores are the
    reference's best window logits, and differ from TRUNCATION_END's for passages past the first."""
    rows = [{"query": QUERIES[0], "document": passage(rng, 25), "label": i % 2} for i in range(4)]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    documents = [row["document"] for row in rows]
    with RerankerClient(gateway.target) as c:
        split = ServiceRanker(c, truncation=Truncation("split", WINDOW, OVERLAP, MAX_WINDOWS))(QUERIES[0], documents)
    expected = [reference.logits_of_encodings([e for e, _, _ in transformers_windows(reference, QUERIES[0], d, WINDOW, OVERLAP,
                                                                                      MAX_WINDOWS)[0]]).max() for d in documents]
    np.testing.assert_allclose(split, expected, atol=TOL, rtol=0)
    args = [str(data), "--targets", gateway.target, "--output-dir", str(tmp_path), "--no-progress"]
    assert evaluation_main(args + ["--truncation", "split", "--window-tokens", str(WINDOW), "--max-windows", "4"]) == 0
    assert evaluation_main(args + ["--window-tokens", "64"]) == 2
    assert "need --truncation split" in capsys.readouterr().err


def test_the_cli_splits_and_prints_each_documents_best_window(gateway, rng, capsys):
    documents = [passage(rng, 20), SENTENCES[0]]
    argv = ["--target", gateway.target, "--split", "--window-tokens", str(WINDOW), "--json", QUERIES[0], *documents]
    assert cli_main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    for row in rows:
        w = row["best_window"]
        assert row["document"][w["start_char"] : w["end_char"]] == w["text"] and w["text"]
    assert {row["index"] for row in rows} == {0, 1}
