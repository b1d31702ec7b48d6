"""tei.v1 over gRPC (text-embeddings-inference's Rerank and Info services) on the gateway's gRPC port,
through the real gateway and Triton: wire compatibility with TEI's proto, reflection and health,
reranker.v1's scores, TEI's truncation and streaming semantics and its status codes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ara_reranker_server.api.large_messages import INLINE_BYTES
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.tei.v1 import tei_pb2, tei_pb2_grpc
from tests.helpers import SAME_SCORE, assert_same_ranking, v1_scores
from tools.arabic_text import QUERIES, long_passage, mixed_passages, passage

KEY = "tei-test-key"

# TEI's proto/tei.proto (commit 0d124dc), the parts served here: (message, field, number, type, label).
_T = {"string": 9, "uint32": 13, "uint64": 4, "bool": 8, "float": 2, "message": 11, "enum": 14}
TEI_FIELDS = {
    ("InfoResponse", "version", 1, "string"), ("InfoResponse", "sha", 2, "string"), ("InfoResponse", "docker_label", 3, "string"),
    ("InfoResponse", "model_id", 4, "string"), ("InfoResponse", "model_sha", 5, "string"), ("InfoResponse", "model_dtype", 6, "string"),
    ("InfoResponse", "model_type", 7, "enum"), ("InfoResponse", "max_concurrent_requests", 8, "uint32"),
    ("InfoResponse", "max_input_length", 9, "uint32"), ("InfoResponse", "max_batch_tokens", 10, "uint32"),
    ("InfoResponse", "max_batch_requests", 11, "uint32"), ("InfoResponse", "max_client_batch_size", 12, "uint32"),
    ("InfoResponse", "tokenization_workers", 13, "uint32"),
    ("Metadata", "compute_chars", 1, "uint32"), ("Metadata", "compute_tokens", 2, "uint32"), ("Metadata", "total_time_ns", 3, "uint64"),
    ("Metadata", "tokenization_time_ns", 4, "uint64"), ("Metadata", "queue_time_ns", 5, "uint64"),
    ("Metadata", "inference_time_ns", 6, "uint64"),
    ("RerankRequest", "query", 1, "string"), ("RerankRequest", "texts", 2, "string"), ("RerankRequest", "truncate", 3, "bool"),
    ("RerankRequest", "raw_scores", 4, "bool"), ("RerankRequest", "return_text", 5, "bool"),
    ("RerankRequest", "truncation_direction", 6, "enum"),
    ("RerankStreamRequest", "query", 1, "string"), ("RerankStreamRequest", "text", 2, "string"),
    ("RerankStreamRequest", "truncate", 3, "bool"), ("RerankStreamRequest", "raw_scores", 4, "bool"),
    ("RerankStreamRequest", "return_text", 5, "bool"), ("RerankStreamRequest", "truncation_direction", 6, "enum"),
    ("Rank", "index", 1, "uint32"), ("Rank", "text", 2, "string"), ("Rank", "score", 3, "float"),
    ("RerankResponse", "ranks", 1, "message"), ("RerankResponse", "metadata", 2, "message"),
}


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.target) as channel:
        yield channel


@pytest.fixture(scope="module")
def tei(channel):
    return tei_pb2_grpc.RerankStub(channel)


def scores(ranks) -> np.ndarray:
    return np.array([r.score for r in sorted(ranks, key=lambda r: r.index)], dtype=np.float32)


def test_the_proto_keeps_teis_names_numbers_and_types():
    file = tei_pb2.DESCRIPTOR
    assert file.package == "tei.v1"
    got = {(m.name, f.name, f.number, next(k for k, v in _T.items() if v == f.type))
           for m in file.message_types_by_name.values() for f in m.fields}
    assert got == TEI_FIELDS
    rerank = file.services_by_name["Rerank"].methods_by_name
    assert (rerank["Rerank"].input_type.name, rerank["Rerank"].output_type.name) == ("RerankRequest", "RerankResponse")
    assert rerank["RerankStream"].input_type.name == "RerankStreamRequest"
    assert file.services_by_name["Info"].methods_by_name["Info"].output_type.name == "InfoResponse"
    assert tei_pb2.MODEL_TYPE_RERANKER == 2 and tei_pb2.TRUNCATION_DIRECTION_LEFT == 1


def test_reflection_lists_tei_services_and_health_serves_them(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [answer] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    listed = {s.name for s in answer.list_services_response.service}
    assert {"tei.v1.Rerank", "tei.v1.Info", "reranker.v1.Reranker"} <= listed
    [described] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="tei.v1.Rerank")]), timeout=10)
    assert described.file_descriptor_response.file_descriptor_proto
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("tei.v1.Rerank", "tei.v1.Info"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == health_pb2.HealthCheckResponse.SERVING


def test_rerank_gives_reranker_v1s_scores_best_first(tei, client, reference, rng):
    documents = mixed_passages(rng, 8) + [""]
    response = tei.Rerank(tei_pb2.RerankRequest(query=QUERIES[0], texts=documents, truncate=True, return_text=True), timeout=60)
    assert_same_ranking([(r.index, r.score) for r in response.ranks], [(r.index, r.score) for r in client.rerank(QUERIES[0], documents)])
    np.testing.assert_allclose(scores(response.ranks), reference.scores(QUERIES[0], documents), atol=1e-4, rtol=0)
    assert all(r.text == documents[r.index] for r in response.ranks)
    assert response.metadata.compute_tokens > 0 and response.metadata.total_time_ns > 0
    raw = tei.Rerank(tei_pb2.RerankRequest(query=QUERIES[0], texts=documents, raw_scores=True), timeout=60)
    np.testing.assert_allclose(scores(raw.ranks), v1_scores(client, QUERIES[0], documents, raw_scores=True), atol=SAME_SCORE, rtol=0)
    assert not any(r.HasField("text") for r in raw.ranks)


def test_rerank_stream_ranks_every_message_and_merges_queries_by_logit(tei, client, rng):
    documents = mixed_passages(rng, 6)
    same = tei.RerankStream(iter(tei_pb2.RerankStreamRequest(query=QUERIES[1], text=d, truncate=True) for d in documents), timeout=60)
    np.testing.assert_allclose(scores(same.ranks), v1_scores(client, QUERIES[1], documents), atol=SAME_SCORE, rtol=0)
    # Two queries in one stream: each pair scored with its own query, all ranked together by logit.
    queries = [QUERIES[i % 2] for i in range(len(documents))]
    mixed = tei.RerankStream(iter(tei_pb2.RerankStreamRequest(query=q, text=d, truncate=True, raw_scores=i == 0)
                                  for i, (q, d) in enumerate(zip(queries, documents))), timeout=60)
    logits = np.array([client.rerank(q, [d], raw_scores=True)[0].score for q, d in zip(queries, documents)], dtype=np.float32)
    # raw_scores: the first message's. Each pair alone is padded differently than in the stream's batch: close, not equal.
    np.testing.assert_allclose(scores(mixed.ranks), logits, atol=1e-4, rtol=0)
    assert [r.score for r in mixed.ranks] == sorted((r.score for r in mixed.ranks), reverse=True)  # one order, by logit
    assert sorted(r.index for r in mixed.ranks) == list(range(len(documents)))


def test_truncation_follows_tei_truncate_false_refuses_and_left_keeps_the_end(triton, tiny_model_dir, tmp_path, reference, rng):
    args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir), "max_input_length": "512"}
    documents = [long_passage(rng), passage(rng, 3)]
    with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway, grpc.insecure_channel(gateway.target) as channel:
        stub = tei_pb2_grpc.RerankStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Rerank(tei_pb2.RerankRequest(query=QUERIES[0], texts=documents), timeout=60)  # truncate: false
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "512" in refused.value.details()
        left = stub.Rerank(tei_pb2.RerankRequest(query=QUERIES[0], texts=documents, truncate=True,
                                                 truncation_direction=tei_pb2.TRUNCATION_DIRECTION_LEFT), timeout=60)
        np.testing.assert_allclose(scores(left.ranks), reference.scores(QUERIES[0], documents, 512, side="left"), atol=1e-4, rtol=0)


def test_errors_carry_teis_status_codes(tei):
    for request, code in ((tei_pb2.RerankRequest(query="سؤال"), grpc.StatusCode.INVALID_ARGUMENT),
                          (tei_pb2.RerankRequest(query=" ", texts=["نص"]), grpc.StatusCode.INVALID_ARGUMENT),
                          (tei_pb2.RerankRequest(query="سؤال", texts=["نص"] * 1001), grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as failed:
            tei.Rerank(request, timeout=30)
        assert failed.value.code() == code, failed.value.details()
    with pytest.raises(grpc.RpcError) as empty:
        tei.RerankStream(iter(()), timeout=30)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_info_describes_the_default_model_as_a_reranker(channel):
    info = tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=10)
    assert info.model_id == "offline-tiny" and info.model_type == tei_pb2.MODEL_TYPE_RERANKER
    assert info.max_input_length == 8192 and info.max_client_batch_size == 1000 and info.version


def test_api_keys_guard_tei_v1_unary_and_streaming(triton, tiny_model_dir, tmp_path):
    args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir), "api_keys": KEY}
    with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway, grpc.insecure_channel(gateway.target) as channel:
        stub = tei_pb2_grpc.RerankStub(channel)
        calls = [lambda md: stub.Rerank(tei_pb2.RerankRequest(query="سؤال", texts=["نص"]), metadata=md, timeout=30),
                 lambda md: stub.RerankStream(iter([tei_pb2.RerankStreamRequest(query="سؤال", text="نص")]), metadata=md, timeout=30),
                 lambda md: tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), metadata=md, timeout=30)]
        for call in calls:
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as denied:
                    call(metadata)
                assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            call((("authorization", f"Bearer {KEY}"),))


def test_a_large_request_is_ranked_and_echoed_like_reranker_v1(tei, client, rng):
    """Over INLINE_BYTES the gateway reads and writes tei.v1's messages a slice at a time (large_messages.py)."""
    documents = [passage(rng, 80) for _ in range(130)]
    request = tei_pb2.RerankRequest(query=QUERIES[1], texts=documents, truncate=True, return_text=True)
    assert request.ByteSize() > INLINE_BYTES
    response = tei.Rerank(request, timeout=300)
    assert all(r.text == documents[r.index] for r in response.ranks) and len(response.ranks) == 130
    assert_same_ranking([(r.index, r.score) for r in response.ranks],
                        [(r.index, r.score) for r in client.rerank(QUERIES[1], documents)])
    assert response.metadata.compute_chars == sum(len(d) for d in documents)
