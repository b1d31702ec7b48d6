"""End to end through the real gateway and a real tritonserver (tiny offline model, CPU, loopback).

The service's scores must equal the in-process model's (sigmoid of the logit, float32) and its order
must be the order of those scores, whatever the chunking and batching."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ara_reranker_client import AsyncRerankerClient, RerankerClient, RerankerError
from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc
from ara_reranker_server.api.large_messages import INLINE_BYTES
from tools.arabic_text import (
    MODEL_CARD_CANDIDATES,
    MODEL_CARD_QUERY,
    QUERIES,
    long_passage,
    mixed_passages,
    passage,
    very_long_passage,
)

TOL = 1e-4
SHORT = 512  # a gateway scoring at 512 tokens, as CrossEncoder(model, max_length=512) does


def expected_order(scores: np.ndarray) -> list[int]:
    """Best first, ties by lower index."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


@pytest.fixture(scope="module")
def short_gateway(make_gateway):
    """A second gateway on the same Triton with max_input_length 512."""
    return make_gateway(max_input_length=SHORT)


@pytest.fixture(scope="module")
def short_client(short_gateway):
    with RerankerClient(short_gateway.target, timeout=60) as c:
        yield c


def test_scores_equal_in_process_model_and_order_follows_them(client, reference, rng):
    documents = mixed_passages(rng, 40) + [long_passage(rng), passage(rng, 250), passage(rng, 450)]
    query = QUERIES[0]
    results = client.rerank(query, documents)
    expected = reference.scores(query, documents)
    assert sorted(r.index for r in results) == list(range(len(documents)))
    got = np.array([r.score for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    # The order is the order of the service's own logits (robust to float noise between near-equal ones).
    logits = np.array([r.logit for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)
    assert [r.index for r in results] == expected_order(logits)
    np.testing.assert_allclose(logits, reference.logits(query, documents), atol=TOL, rtol=0)
    assert all(0.0 <= r.score <= 1.0 for r in results)


def test_raw_scores_are_the_logits(client, reference, rng):
    documents = mixed_passages(rng, 12)
    results = client.rerank(QUERIES[1], documents, raw_scores=True)
    got = np.array([r.score for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)
    np.testing.assert_allclose(got, reference.logits(QUERIES[1], documents), atol=TOL, rtol=0)


def test_top_k_is_a_prefix_of_the_full_ranking(client, rng):
    """top_k returns the best k of the full ranking. Two calls are batched differently, so a score may
    move by float32 noise between them: compare scores within tolerance, and order up to near-ties."""
    documents = mixed_passages(rng, 20)
    full = client.rerank(QUERIES[2], documents)
    full_logits = {r.index: r.logit for r in full}
    for k in (5, 1, 100):
        top = client.rerank(QUERIES[2], documents, top_k=k)
        assert len(top) == min(k, len(documents))
        np.testing.assert_allclose([r.logit for r in top], [r.logit for r in full[: len(top)]], atol=TOL, rtol=0)
        np.testing.assert_allclose([r.logit for r in top], [full_logits[r.index] for r in top], atol=TOL, rtol=0)
        cutoff = full[len(top) - 1].logit  # anything clearly above the k-th best must be in the top k
        assert {i for i, x in full_logits.items() if x > cutoff + TOL} <= {r.index for r in top}
    with pytest.raises(RerankerError) as err:
        client.rerank(QUERIES[2], documents, top_k=0)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in err.value.details


def test_return_documents_echoes_each_text(client, rng):
    documents = mixed_passages(rng, 6)
    with_text = client.rerank(QUERIES[3], documents, return_documents=True)
    assert all(r.document == documents[r.index] for r in with_text)
    assert all(r.document is None for r in client.rerank(QUERIES[3], documents))


def test_truncation_end_cuts_the_document_at_the_models_8192_tokens_and_counts_it(gateway, reference, rng):
    documents = [very_long_passage(rng), "نص قصير", passage(rng, 300)]
    with grpc.insecure_channel(gateway.target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        response = stub.Rerank(reranker_pb2.RerankRequest(query=QUERIES[0], documents=documents), timeout=120)
    assert response.usage.truncated_documents == 1
    assert response.usage.documents == 3
    lengths = [len(reference.encode(QUERIES[0], d)) for d in documents]
    assert response.usage.input_tokens == sum(lengths) and lengths[0] == 8192 and lengths[2] > 4000
    got = {r.index: r.score for r in response.results}
    np.testing.assert_allclose([got[i] for i in range(3)], reference.scores(QUERIES[0], documents), atol=TOL, rtol=0)
    assert response.timings.total_ns >= response.timings.inference_ns > 0
    assert response.model_id == "offline-tiny"


def test_max_input_length_lowers_the_limit_and_scores_equal_the_model_at_that_length(short_client, reference, rng):
    documents = [long_passage(rng), "نص قصير", long_passage(rng)] + mixed_passages(rng, 5)
    results = short_client.rerank(QUERIES[0], documents, raw_scores=True)
    got = np.array([r.score for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)
    np.testing.assert_allclose(got, reference.logits(QUERIES[0], documents, SHORT), atol=TOL, rtol=0)
    assert short_client.info().max_input_length == SHORT
    with pytest.raises(RerankerError) as err:
        short_client.rerank(QUERIES[0], documents, truncate=False)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "at most 512" in err.value.details


def test_truncation_none_refuses_naming_the_document_and_its_tokens(client, reference, rng):
    documents = ["نص قصير", passage(rng, 400), very_long_passage(rng)]
    tokens = len(reference.tokenizer(QUERIES[0], documents[2])["input_ids"])
    with pytest.raises(RerankerError) as err:
        client.rerank(QUERIES[0], documents, truncate=False)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "document 2" in err.value.details and str(tokens) in err.value.details and "8192" in err.value.details
    assert len(client.rerank(QUERIES[0], documents[:2], truncate=False)) == 2  # ~7,000 tokens: fits


def test_model_card_example(client, reference):
    results = client.rerank(MODEL_CARD_QUERY, MODEL_CARD_CANDIDATES, return_documents=True)
    expected = reference.scores(MODEL_CARD_QUERY, MODEL_CARD_CANDIDATES)
    assert [r.index for r in results] == expected_order(expected)
    assert [r.document for r in results] == [MODEL_CARD_CANDIDATES[i] for i in expected_order(expected)]


async def test_64_concurrent_clients_each_get_their_own_answer(gateway, reference, rng):
    requests = [(QUERIES[i % len(QUERIES)] + f" {i}", mixed_passages(rng, 1 + i % 5, max_sentences=4)) for i in range(64)]

    async def one(query, documents):
        async with AsyncRerankerClient(gateway.target, timeout=120) as c:
            return await c.rerank(query, documents, raw_scores=True)

    answers = await asyncio.gather(*(one(q, d) for q, d in requests))
    for (query, documents), results in zip(requests, answers):
        got = np.array([r.score for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)
        np.testing.assert_allclose(got, reference.logits(query, documents), atol=TOL, rtol=0)


def test_info_describes_the_model_and_limits(client):
    info = client.info()
    assert info.model_id == "offline-tiny"
    assert info.triton_model == "ara_reranker"
    assert info.max_input_length == 8192  # the real model's context, from the model directory
    assert info.dtype == "float32" and info.engine == "torch"
    assert info.limits.chunk_size == 8 and info.limits.max_documents_per_request == 1000
    assert info.limits.max_inflight_tokens > 0 and info.limits.max_concurrent_rpcs > 0
    assert info.version


def test_health_is_serving_and_reflection_lists_the_service(gateway):
    with grpc.insecure_channel(gateway.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "reranker.v1.Reranker"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"reranker.v1.Reranker", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize(
    "query, documents, needle",
    [
        ("", ["نص"], "query is empty"),
        ("   ", ["نص"], "query is empty"),
        ("سؤال", [], "documents is empty"),
    ],
)
def test_invalid_requests_are_invalid_argument(client, query, documents, needle):
    with pytest.raises(RerankerError) as err:
        client.rerank(query, documents)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details


def test_deadline_shorter_than_the_work_is_deadline_exceeded(gateway, rng):
    documents = mixed_passages(rng, 200)
    with RerankerClient(gateway.target, timeout=0.05) as c:
        with pytest.raises(RerankerError) as err:
            c.rerank(QUERIES[0], documents)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with RerankerClient(gateway.target, timeout=60) as c:  # and the gateway goes on serving
        assert len(c.rerank(QUERIES[0], documents[:3])) == 3


def test_a_large_request_is_scored_and_echoed_like_a_small_one(gateway, reference, rng):
    """Over INLINE_BYTES the gateway reads and writes the messages a slice at a time (large_messages.py): the
    same scores, order and documents."""
    documents = [passage(rng, 80) for _ in range(120)]
    request = reranker_pb2.RerankRequest(query=QUERIES[2], documents=documents, return_documents=True, top_k=100)
    assert request.ByteSize() > INLINE_BYTES
    with grpc.insecure_channel(gateway.target) as channel:
        response = reranker_pb2_grpc.RerankerStub(channel).Rerank(request, timeout=300)
    assert len(response.results) == 100 and response.usage.documents == 120
    assert all(r.document == documents[r.index] for r in response.results)
    logits = reference.logits(QUERIES[2], documents)
    np.testing.assert_allclose([r.logit for r in response.results], logits[[r.index for r in response.results]], atol=TOL, rtol=0)
    assert [r.index for r in response.results] == [r.index for r in sorted(response.results, key=lambda r: (-r.logit, r.index))]
    left_out = set(range(120)) - {r.index for r in response.results}
    assert min(r.logit for r in response.results) >= max(logits[i] for i in left_out) - TOL


@pytest.mark.parametrize("size", ["small", "large"])
def test_a_message_that_is_not_a_rerank_request_is_invalid_argument(gateway, size):
    raw = reranker_pb2.RerankRequest(query="سؤال", documents=["نص" * 300_000] * (2 if size == "large" else 0)).SerializeToString()
    assert (len(raw) > INLINE_BYTES) == (size == "large")
    with grpc.insecure_channel(gateway.target) as channel:
        rerank = channel.unary_unary("/reranker.v1.Reranker/Rerank")  # bytes in and out
        with pytest.raises(grpc.RpcError) as raised:
            rerank(raw[:-5], timeout=60)  # the last document cut short
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid reranker.v1.RerankRequest message" in raised.value.details()
