"""Unit tests of the reranking core (server/ara_reranker_server/reranking.py) alone: real tokenizer, in-process scorers
behind the ``Scorer`` protocol instead of Triton. End-to-end behaviour is in test_gateway_e2e.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from ara_reranker_server.core_types import Limits, RerankJob
from ara_reranker_server.errors import InvalidRequest, Overloaded
from ara_reranker_server.models import load_tokenizer
from ara_reranker_server.ranking import sigmoid
from ara_reranker_server.reranking import Reranker
from ara_reranker_server.tokenization import PairTokenizer
from tests.helpers import wait_for_async
from tools.arabic_text import QUERIES, SENTENCES, long_passage, mixed_passages, passage

pytestmark = pytest.mark.unit  # starts no process: make test-unit

LIMITS = Limits(max_documents=100, max_query_chars=5000, max_document_chars=100000, chunk_size=4, max_inflight_pairs=100)
SHORT = 512  # the lowered limit these unit tests use (users commonly score at 512 for speed)


class ModelScorer:
    """The tiny model in-process, recording each chunk it is sent."""

    def __init__(self, reference) -> None:
        self.reference = reference
        self.chunks: list[np.ndarray] = []

    async def score(self, input_ids, attention_mask, deadline, token_type_ids=None, priority="interactive"):
        self.chunks.append(attention_mask.sum(axis=1))
        rows = [list(ids[mask == 1]) for ids, mask in zip(input_ids, attention_mask)]
        return self.reference.logits_of_ids(rows)


class ConstantScorer:
    """Every pair gets the same logit: exposes how ties are ordered."""

    async def score(self, input_ids, attention_mask, deadline, token_type_ids=None, priority="interactive"):
        return np.zeros(len(input_ids), dtype=np.float32)


class FixedLogits:
    """Logits chosen by the test, keyed by each pair's last document token (the one before </s>)."""

    def __init__(self, by_first_document_token: dict[int, float]) -> None:
        self.logits = by_first_document_token

    async def score(self, input_ids, attention_mask, deadline, token_type_ids=None, priority="interactive"):
        return np.array([self.logits[int(row[-2 if m.all() else int(m.sum()) - 2])] for row, m in zip(input_ids, attention_mask)],
                        dtype=np.float32)


class SlowScorer:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def score(self, input_ids, attention_mask, deadline, token_type_ids=None, priority="interactive"):
        await self.release.wait()
        return np.zeros(len(input_ids), dtype=np.float32)


@pytest.fixture(scope="module")
def pair_tokenizer(tiny_model_dir):
    return PairTokenizer(Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")), max_length=SHORT, pad_id=1, threads=1)


def reranker(pair_tokenizer, scorer, limits=LIMITS) -> Reranker:
    return Reranker(pair_tokenizer, scorer, limits, default_timeout_s=30)


def test_pairs_match_the_transformers_tokenizer_including_truncation(pair_tokenizer, reference, rng):
    documents = mixed_passages(rng, 20) + [long_passage(rng), "", " "]
    ids, truncated = pair_tokenizer.encode(QUERIES[0], documents, truncate=True)
    assert ids == [reference.encode(QUERIES[0], d, SHORT) for d in documents]
    assert truncated == 1 and max(map(len, ids)) == SHORT


async def test_chunks_are_length_sorted_and_scores_go_back_to_their_documents(pair_tokenizer, reference, rng):
    documents = mixed_passages(rng, 15)
    scorer = ModelScorer(reference)
    outcome = await reranker(pair_tokenizer, scorer).rerank(RerankJob(QUERIES[1], documents, raw_scores=True))
    assert [len(c) for c in scorer.chunks] == [4, 4, 4, 3]
    lengths = np.concatenate(scorer.chunks)
    assert list(lengths) == sorted(lengths, reverse=True)
    expected = reference.logits(QUERIES[1], documents, SHORT)
    got = {r.index: r.score for r in outcome.results}
    np.testing.assert_allclose([got[i] for i in range(15)], expected, atol=1e-5, rtol=0)
    assert outcome.input_tokens == int(lengths.sum())


async def test_ties_keep_the_lower_index_first_and_top_k_cuts(pair_tokenizer):
    core = reranker(pair_tokenizer, ConstantScorer())
    outcome = await core.rerank(RerankJob("سؤال", ["أ", "ب", "ج", "د", "هـ"], top_k=3))
    assert [r.index for r in outcome.results] == [0, 1, 2]
    assert all(r.score == 0.5 for r in outcome.results)


def test_sigmoid_is_float32_and_stable_at_the_extremes():
    values = sigmoid(np.array([-1000.0, -20.0, 0.0, 20.0, 1000.0]))
    assert values.dtype == np.float32
    assert values[0] == 0.0 and values[2] == 0.5 and values[4] == 1.0
    assert np.all(np.diff(values) >= 0)


async def test_a_query_with_no_room_for_a_document_is_invalid(pair_tokenizer):
    with pytest.raises(InvalidRequest, match="query has .* tokens"):
        await reranker(pair_tokenizer, ConstantScorer()).rerank(RerankJob("كلمة " * 600, ["نص"]))


async def test_admission_refuses_at_once_beyond_the_bound_and_frees_on_completion(pair_tokenizer):
    slow = SlowScorer()
    core = reranker(pair_tokenizer, slow, Limits(10, 5000, 100000, 4, max_inflight_pairs=10))
    first = asyncio.create_task(core.rerank(RerankJob("سؤال", ["نص"] * 8)))
    await wait_for_async(lambda: core.admission.in_flight, bool, "the first request admitted (pairs in flight)", 5.0)
    with pytest.raises(Overloaded, match="max_inflight_pairs=10"):
        await core.rerank(RerankJob("سؤال", ["نص"] * 3))
    slow.release.set()
    await first
    assert core.admission.in_flight == 0
    assert len((await core.rerank(RerankJob("سؤال", ["نص"] * 10))).results) == 10


async def test_the_ranking_is_the_order_of_the_logits_even_where_sigmoids_saturate(pair_tokenizer):
    """float32 sigmoid(x) is exactly 1.0 for every x above ~16.6: ranking by it would tie these and fall
    back to input order. The ranking must be the logits' order; the scores stay the float32 sigmoids."""
    documents = ["أ", "ب", "ج", "د", "هـ", "و"]
    first_tokens = [pair_tokenizer.encode("سؤال", [d], True)[0][0][-2] for d in documents]
    logits = [17.0, 17.5, 40.0, 16.9, 18.25, 17.5]
    core = reranker(pair_tokenizer, FixedLogits(dict(zip(first_tokens, logits))))
    outcome = await core.rerank(RerankJob("سؤال", documents))
    assert [r.index for r in outcome.results] == [2, 4, 1, 5, 0, 3]
    assert all(r.score == 1.0 for r in outcome.results)  # saturated, as documented: rank by logit
    np.testing.assert_array_equal([r.logit for r in outcome.results], np.float32([40.0, 18.25, 17.5, 17.5, 17.0, 16.9]))
    raw = await core.rerank(RerankJob("سؤال", documents, raw_scores=True, top_k=3))
    assert [r.index for r in raw.results] == [2, 4, 1]


@pytest.fixture
def saved_settings_model_dir(tiny_model_dir, tmp_path):
    """The tiny model's tokenizer files with padding and truncation blocks saved in tokenizer.json, as
    many published tokenizer files carry (transformers ignores them; a raw Tokenizer.from_file keeps them)."""
    target = tmp_path / "saved-settings"
    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(tiny_model_dir / name, target / name)
    data = json.loads((target / "tokenizer.json").read_text())
    data["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": 1, "pad_type_id": 0, "pad_token": "<pad>"}
    data["truncation"] = {"direction": "Right", "max_length": 48, "strategy": "LongestFirst", "stride": 0}
    (target / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    return target


def test_a_document_cut_at_its_start_keeps_its_last_tokens_as_transformers_left_truncation(pair_tokenizer, reference, rng):
    documents = mixed_passages(rng, 6) + [long_passage(rng), long_passage(rng) + " النهاية", "", " "]
    ids, truncated = pair_tokenizer.encode(QUERIES[1], documents, truncate=True, from_start=True)
    assert ids == [reference.encode(QUERIES[1], d, SHORT, side="left") for d in documents]
    assert truncated == 2 and ids[-3][-5:] != ids[-4][-5:]  # the two long ones end differently: their ends were kept


def test_max_document_tokens_cuts_each_document_to_that_many_tokens(pair_tokenizer, reference, rng):
    documents = mixed_passages(rng, 6) + [long_passage(rng)]
    ids, truncated = pair_tokenizer.encode(QUERIES[0], documents, truncate=True, max_document_tokens=40)
    assert ids == [reference.capped(QUERIES[0], d, 40) for d in documents]
    whole = [len(reference.tokenizer(d, add_special_tokens=False)["input_ids"]) for d in documents]
    assert truncated == sum(n > 40 for n in whole) > 0
    with pytest.raises(InvalidRequest, match="max_document_tokens=40"):
        pair_tokenizer.encode(QUERIES[0], documents, truncate=False, max_document_tokens=40)


def test_padding_and_truncation_saved_in_tokenizer_json_do_not_change_the_pairs(saved_settings_model_dir, reference, rng):
    tokenizer = load_tokenizer(str(saved_settings_model_dir), SHORT, threads=1)
    documents = mixed_passages(rng, 10) + [long_passage(rng), SENTENCES[0]]
    ids, truncated = tokenizer.encode(QUERIES[2], documents, truncate=True)
    assert ids == [reference.encode(QUERIES[2], d, SHORT) for d in documents]
    assert truncated == 1


@pytest.mark.parametrize("from_start", [False, True], ids=["cut-at-end", "cut-at-start"])
@settings(max_examples=60, deadline=None)
@given(
    sentences=st.integers(min_value=1, max_value=80),
    room=st.integers(min_value=1, max_value=120),
    noise=st.text(alphabet=st.sampled_from(list("ابت ثج\n.،؟ a1-")), max_size=40),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_documents_cut_by_characters_before_tokenizing_keep_the_whole_documents_tokens(pair_tokenizer, from_start,
                                                                                         sentences, room, noise, seed):
    """Long documents are cut by characters before tokenizing; the tokens kept are exactly the ``room`` tokens the
    whole document's encoding has at the kept end: its first ones, or its last ones for a document cut at its start
    (left truncation); the whole encoding when it is shorter. Noise and a long word repeated stand at the cut end."""
    tokenizer, raw = pair_tokenizer, pair_tokenizer._tok
    parts = [passage(np.random.default_rng(seed), sentences), noise, "كلمةطويلةجدا" * (seed % 7)]
    document = "".join(reversed(parts) if from_start else parts)
    kept = slice(-room, None) if from_start else slice(room)
    got = tokenizer._document_encodings([document], room, from_start=from_start)[0].ids[kept]
    assert got == raw.encode(document, add_special_tokens=False).ids[kept]


@pytest.mark.parametrize("from_start", [False, True])
def test_a_batch_of_short_and_cut_documents_gives_each_its_own_tokens(pair_tokenizer, from_start):
    """Documents short enough to encode whole (encoded without offsets) and long ones cut by characters (encoded
    with word ids, for the exactness check) in one batch: each gets the tokens of its own whole encoding, in order."""
    tokenizer, raw = pair_tokenizer, pair_tokenizer._tok
    rng = np.random.default_rng(7)
    room = 40
    documents = [passage(rng, 2), passage(rng, 60), "", passage(rng, 1), "كلمةطويلةجدا" * 80, passage(rng, 90)]
    assert sum(len(d) > room * 16 for d in documents) == 3  # both kinds in the batch
    got = tokenizer._document_encodings(documents, room, from_start=from_start)
    for document, encoding in zip(documents, got):
        whole = raw.encode(document, add_special_tokens=False).ids
        assert (encoding.ids[-room:] if from_start else encoding.ids[:room]) == (whole[-room:] if from_start else whole[:room])


async def test_admission_by_tokens_refuses_a_second_request_beyond_the_token_bound(pair_tokenizer):
    slow = SlowScorer()
    limits = Limits(10, 5000, 100000, 4, max_inflight_pairs=100, max_inflight_tokens=60)
    core = reranker(pair_tokenizer, slow, limits)
    first = asyncio.create_task(core.rerank(RerankJob("سؤال", [SENTENCES[0]] * 3)))  # ~3 x 25 tokens: over 60, alone
    await wait_for_async(lambda: core.token_admission.in_flight, bool, "the first request admitted (tokens in flight)", 5.0)
    assert core.token_admission.in_flight > 60
    with pytest.raises(Overloaded, match="max_inflight_tokens=60"):
        await core.rerank(RerankJob("سؤال", ["نص"]))
    slow.release.set()
    await first
    assert core.token_admission.in_flight == 0 and core.admission.in_flight == 0


async def test_large_requests_are_tokenized_on_lower_priority_threads_small_ones_on_the_event_loop(tiny_model_dir, reference, rng):
    """A request of several slices (or over BACKGROUND_CHARS) takes seconds of CPU to tokenize: it runs on the
    tokenizer's background threads, niced, so that small calls on the same cores go first; a small one is
    tokenized on the event loop, a medium one on the normal tokenizer thread. Scores are the same either way."""
    import os
    import threading

    from ara_reranker_server.reranking import INLINE_CHARS, TOKENIZE_SLICE
    from ara_reranker_server.tokenization import BACKGROUND_NICE

    tok = PairTokenizer(Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")), max_length=SHORT, pad_id=1, threads=1)
    seen: list[tuple[str, int]] = []
    encode_slice = tok.encode_slice

    def recording(*args, **kwargs):
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return encode_slice(*args, **kwargs)

    tok.encode_slice = recording
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    scorer = ModelScorer(reference)
    core = reranker(tok, scorer, Limits(max_documents=100, max_query_chars=5000, max_document_chars=100000, chunk_size=8,
                                        max_inflight_pairs=1000))
    try:
        cases = {"small": ["قصير"] * 3, "medium": [long_passage(rng)[: INLINE_CHARS // 2] for _ in range(4)],
                 "large": mixed_passages(rng, TOKENIZE_SLICE + 8)}
        for label, documents in cases.items():
            seen.clear()
            outcome = await core.rerank(RerankJob(QUERIES[0], documents, raw_scores=True))
            got = {r.index: r.score for r in outcome.results}
            np.testing.assert_allclose([got[i] for i in range(len(documents))], reference.logits(QUERIES[0], documents, SHORT),
                                       atol=1e-4, rtol=0)
            names = {name.split("_")[0] for name, _ in seen}
            if label == "small":
                assert names == {threading.current_thread().name} and {n for _, n in seen} == {base}, seen
            elif label == "medium":
                assert names == {"tokenize"} and {n for _, n in seen} == {base}, seen
            else:
                assert len(seen) == 2 and names == {"tokenize-large"}, seen
                if sys.platform.startswith("linux"):
                    assert {n for _, n in seen} == {min(19, base + BACKGROUND_NICE)}, seen
    finally:
        tok.close()
