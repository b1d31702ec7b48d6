"""Unit tests of the reranking core (server/reranking.py) alone: real tokenizer, in-process scorers
behind the ``Scorer`` protocol instead of Triton. End-to-end behaviour is in test_gateway_e2e.py."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tokenizers import Tokenizer

from server.errors import InvalidRequest, Overloaded
from server.reranking import Limits, PairTokenizer, Reranker, RerankJob, sigmoid
from tests.arabic_text import QUERIES, long_passage, mixed_passages

LIMITS = Limits(max_documents=100, max_query_chars=5000, max_document_chars=100000, chunk_size=4, max_inflight_pairs=100)


class ModelScorer:
    """The tiny model in-process, recording each chunk it is sent."""

    def __init__(self, reference) -> None:
        self.reference = reference
        self.chunks: list[np.ndarray] = []

    async def score(self, input_ids, attention_mask, deadline):
        self.chunks.append(attention_mask.sum(axis=1))
        rows = [list(ids[mask == 1]) for ids, mask in zip(input_ids, attention_mask)]
        return self.reference.logits_of_ids(rows)


class ConstantScorer:
    """Every pair gets the same logit: exposes how ties are ordered."""

    async def score(self, input_ids, attention_mask, deadline):
        return np.zeros(len(input_ids), dtype=np.float32)


class SlowScorer:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def score(self, input_ids, attention_mask, deadline):
        await self.release.wait()
        return np.zeros(len(input_ids), dtype=np.float32)


@pytest.fixture(scope="module")
def pair_tokenizer(tiny_model_dir):
    return PairTokenizer(Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")), max_length=512, pad_id=1, threads=1)


def reranker(pair_tokenizer, scorer, limits=LIMITS) -> Reranker:
    return Reranker(pair_tokenizer, scorer, limits, default_timeout_s=30)


def test_pairs_match_the_transformers_tokenizer_including_truncation(pair_tokenizer, reference, rng):
    documents = mixed_passages(rng, 20) + [long_passage(rng), "", " "]
    ids, truncated = pair_tokenizer.encode(QUERIES[0], documents, truncate=True)
    assert ids == [reference.encode(QUERIES[0], d) for d in documents]
    assert truncated == 1 and max(map(len, ids)) == 512


async def test_chunks_are_length_sorted_and_scores_go_back_to_their_documents(pair_tokenizer, reference, rng):
    documents = mixed_passages(rng, 15)
    scorer = ModelScorer(reference)
    outcome = await reranker(pair_tokenizer, scorer).rerank(RerankJob(QUERIES[1], documents, raw_scores=True))
    assert [len(c) for c in scorer.chunks] == [4, 4, 4, 3]
    lengths = np.concatenate(scorer.chunks)
    assert list(lengths) == sorted(lengths, reverse=True)
    expected = reference.logits(QUERIES[1], documents)
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
    await asyncio.sleep(0.2)
    with pytest.raises(Overloaded, match="max_inflight_pairs=10"):
        await core.rerank(RerankJob("سؤال", ["نص"] * 3))
    slow.release.set()
    await first
    assert core.admission.in_flight == 0
    assert len((await core.rerank(RerankJob("سؤال", ["نص"] * 10))).results) == 10
