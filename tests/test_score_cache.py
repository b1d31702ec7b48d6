"""The score cache (server/ara_reranker_server/score_cache.py): bounded by memory and time, keyed by everything a pair's answer
depends on, and, through the core and the real gateway, a repeated pair never goes to the model again
while every score stays the model's."""

from __future__ import annotations

import tracemalloc
import urllib.request

import numpy as np
import pytest
from tokenizers import Tokenizer

from ara_reranker_client import RerankerClient
from ara_reranker_client.v1 import reranker_pb2
from ara_reranker_server.core_types import Limits, RerankJob
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.reranking import Reranker
from ara_reranker_server.score_cache import ENTRY_BYTES, ScoreCache
from ara_reranker_server.tokenization import PairTokenizer
from ara_reranker_server.windows import Split
from tests.helpers import wait_triton_at_rest
from tools.arabic_text import QUERIES, long_passage, mixed_passages

LIMITS = Limits(max_documents=300, max_query_chars=5000, max_document_chars=100000, chunk_size=8, max_inflight_pairs=1000)


class CountingScorer:
    """The tiny model in-process, counting the pairs it is sent."""

    def __init__(self, reference) -> None:
        self.reference = reference
        self.pairs = 0

    async def score(self, input_ids, attention_mask, deadline, token_type_ids=None, priority="interactive"):
        self.pairs += len(input_ids)
        return self.reference.logits_of_ids([list(ids[mask == 1]) for ids, mask in zip(input_ids, attention_mask)])


@pytest.fixture(scope="module")
def pair_tokenizer(tiny_model_dir):
    return PairTokenizer(Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")), max_length=512, pad_id=1, threads=1)


def test_least_recently_used_pairs_go_first_once_the_memory_bound_is_reached():
    cache = ScoreCache(max_bytes=3 * ENTRY_BYTES, ttl_s=60)
    keys = [ScoreCache.key("m", "q", f"d{i}") for i in range(4)]
    for key in keys[:3]:
        cache.put(key, 1.0, 5, False, 1, None)
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], 2.0, 5, False, 1, None)
    assert len(cache) == 3 and cache.get(keys[1]) is None and cache.get(keys[0]) is not None
    assert ScoreCache(max_bytes=0, ttl_s=60).enabled is False


def test_an_entry_older_than_the_ttl_is_a_miss(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("ara_reranker_server.score_cache.time.monotonic", lambda: now[0])
    cache = ScoreCache(max_bytes=10 * ENTRY_BYTES, ttl_s=30)
    key = ScoreCache.key("m", "q", "d")
    cache.put(key, 1.5, 5, False, 1, None)
    now[0] += 29
    assert cache.get(key).logit == 1.5
    now[0] += 2
    assert cache.get(key) is None and len(cache) == 0
    assert (cache.hits, cache.misses) == (1, 1)


def test_keys_keep_scope_query_and_document_apart():
    assert ScoreCache.key("m", "ab", "c") != ScoreCache.key("m", "a", "bc")
    assert ScoreCache.key("m|a", "b", "c") != ScoreCache.key("m", "a|b", "c")
    assert ScoreCache.key("m", "q", "d") == ScoreCache.key("m", "q", "d")
    assert ScoreCache.key("m", "q", "\ud800") != ScoreCache.key("m", "q", "")  # lone surrogates hash too


def test_an_entry_costs_at_most_entry_bytes():
    """The size setting is honest: measured memory per cached pair stays within ENTRY_BYTES."""
    cache = ScoreCache(max_bytes=10**9, ttl_s=60)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(20000):
        cache.put(ScoreCache.key("model", "query", str(i)), float(i), 100 + i, i % 2 == 0, 1, (0, 0, i) if i % 3 else None)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used / 20000 <= ENTRY_BYTES, used / 20000


async def test_a_repeated_request_is_answered_without_the_model_and_a_partly_new_one_sends_only_the_new(pair_tokenizer, reference, rng):
    scorer = CountingScorer(reference)
    reranker = Reranker(pair_tokenizer, scorer, LIMITS, default_timeout_s=30, name="tiny", cache=ScoreCache(1 << 20, 60))
    documents = mixed_passages(rng, 12) + [long_passage(rng)]
    first = await reranker.rerank(RerankJob(QUERIES[0], documents))
    assert scorer.pairs == len(documents) and first.cached == 0
    again = await reranker.rerank(RerankJob(QUERIES[0], documents, top_k=5))
    assert scorer.pairs == len(documents) and again.cached == len(documents)
    assert again.results == first.results[:5]
    assert (again.input_tokens, again.truncated) == (first.input_tokens, first.truncated) and first.truncated == 1
    more = mixed_passages(rng, 3)
    mixed = await reranker.rerank(RerankJob(QUERIES[0], more + documents))
    assert scorer.pairs == len(documents) + 3 and mixed.cached == len(documents)
    expected = reference.logits(QUERIES[0], more + documents, 512)
    got = np.array([r.logit for r in sorted(mixed.results, key=lambda r: r.index)], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


async def test_pairs_cut_differently_are_not_shared(pair_tokenizer, reference, rng):
    scorer = CountingScorer(reference)
    reranker = Reranker(pair_tokenizer, scorer, LIMITS, default_timeout_s=30, name="tiny", cache=ScoreCache(1 << 20, 60))
    documents = [long_passage(rng), long_passage(rng)]
    for job in (RerankJob(QUERIES[1], documents), RerankJob(QUERIES[1], documents, from_start=True),
                RerankJob(QUERIES[1], documents, max_document_tokens=50), RerankJob(QUERIES[2], documents),
                RerankJob(QUERIES[1], documents, split=Split(max_windows=2))):
        outcome = await reranker.rerank(job)
        assert outcome.cached == 0, job
    other = Reranker(pair_tokenizer, scorer, LIMITS, default_timeout_s=30, name="bge", cache=reranker.cache)
    assert (await other.rerank(RerankJob(QUERIES[1], documents))).cached == 0  # another model


async def test_split_documents_keep_their_best_window_when_cached(pair_tokenizer, reference, rng):
    reranker = Reranker(pair_tokenizer, CountingScorer(reference), LIMITS, default_timeout_s=30, name="tiny",
                        cache=ScoreCache(1 << 20, 60))
    job = RerankJob(QUERIES[3], [long_passage(rng), long_passage(rng), "قصير"], split=Split(window_tokens=256))
    first, again = await reranker.rerank(job), await reranker.rerank(job)
    assert again.cached == 3 and again.results == first.results and again.windows == first.windows > 3
    assert all(r.window is not None for r in again.results)


def test_through_the_gateway_a_repeat_sends_no_pair_to_triton(triton, tiny_model_dir, tmp_path, reference, rng):
    args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir), "score_cache_mb": "16"}
    # Distinct documents: the cache holds one score per pair, while two equal documents scored in different
    # micro-batches (other padding) may differ in the last bit, and then in order, on the first call.
    documents = list(dict.fromkeys(mixed_passages(rng, 40)))[:20]
    assert len(documents) == 20
    with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway, RerankerClient(gateway.target, timeout=60) as client:
        # Triton counts a request's pairs after model.py has answered it: read its counters at rest, not at once.
        before = wait_triton_at_rest(triton.metrics_url)["nv_inference_count"]
        first = client.rerank(QUERIES[4], documents, raw_scores=True)
        middle = wait_triton_at_rest(triton.metrics_url)["nv_inference_count"]
        response = client.stub.Rerank(reranker_pb2.RerankRequest(query=QUERIES[4], documents=documents, raw_scores=True), timeout=60)
        after = wait_triton_at_rest(triton.metrics_url)["nv_inference_count"]
        assert middle - before == len(documents) and after == middle
        assert response.usage.cached_documents == len(documents)
        assert [(r.index, r.score) for r in response.results] == [(r.index, r.score) for r in first]
        np.testing.assert_allclose(sorted(r.score for r in first), sorted(reference.logits(QUERIES[4], documents)), atol=1e-4)
        metrics = urllib.request.urlopen(gateway.metrics_url, timeout=10).read().decode()
        hits = [line for line in metrics.splitlines() if line.startswith("reranker_score_cache_hits_total{")]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in hits) == len(documents)
