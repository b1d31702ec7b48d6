"""Several models behind one gateway: the offline ``tiny`` (XLM-R) and ``bert-tiny`` (BERT-style, token
type ids) served side by side by one tritonserver, chosen per request by name.

What callers rely on: each model's scores equal its own in-process transformers model within 1e-4 (the
BERT one with the tokenizer's token type ids), also under concurrent mixed traffic to both; an unknown
model is NOT_FOUND naming the served ones; Info lists every model with its own limits; health, metrics
and evaluation see each model. Random weights: rankings mean nothing, tokenization and compute are real.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ara_reranker_client import AsyncRerankerClient, RerankerClient, RerankerError
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from client.evaluation import SAMPLE_DATA, evaluate_targets, load_dataset, parse_targets
from tests.helpers import wait_for
from tests.reference import InProcessReference
from tools.arabic_text import QUERIES, long_passage, mixed_passages

TOL = 1e-4
ENGLISH = ["Paris is the capital and most populous city of France.", "A cross-encoder reads the query and the passage together.",
           "Green tea is rich in antioxidants; matcha is powdered green tea.", "The Nile flows north through Egypt."]


@pytest.fixture(scope="module")
def bert_tiny_model_dir():
    return prepare("bert-tiny")


@pytest.fixture(scope="module")
def two_model_triton(tiny_model_dir, bert_tiny_model_dir, tmp_path_factory):
    """One tritonserver serving tiny and bert-tiny as two Triton models (the project's CPU config)."""
    tmp = tmp_path_factory.mktemp("two-model-triton")
    models = {"tiny": tiny_model_dir, "bert-tiny": bert_tiny_model_dir}
    with TritonServer(TritonOptions(models=models, log_path=tmp / "triton.log")) as server:
        yield server


@pytest.fixture(scope="module")
def models_gateway(two_model_triton, tiny_model_dir, bert_tiny_model_dir, tmp_path_factory):
    models = f"tiny={tiny_model_dir},bert-tiny={bert_tiny_model_dir}"
    args = {"triton_endpoints": two_model_triton.grpc_url, "models": models, "chunk_size": "4"}
    with GatewayProcess(args, log_path=tmp_path_factory.mktemp("models") / "gateway.log") as process:
        for name in ("tiny", "bert-tiny"):  # both models ready, not only the default
            wait_serving(process, f"reranker.v1.Reranker/{name}")
        yield process


@pytest.fixture(scope="module")
def bert_reference(bert_tiny_model_dir) -> InProcessReference:
    return InProcessReference(bert_tiny_model_dir)


def wait_serving(gateway: GatewayProcess, service: str, timeout_s: float = 60.0) -> None:
    with grpc.insecure_channel(gateway.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        wait_for(lambda: health_pb2.HealthCheckResponse.ServingStatus.Name(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status),
                 lambda status: status == "SERVING", f"{service} SERVING", timeout_s, poll_s=0.1)


def by_index(results) -> np.ndarray:
    return np.array([r.score for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)


def test_each_model_scores_as_its_own_in_process_model(models_gateway, reference, bert_reference, rng):
    arabic = mixed_passages(rng, 10) + [long_passage(rng)]
    english = ENGLISH + [" ".join(ENGLISH * 40)]  # the last one is cut at bert-tiny's 512 tokens
    with RerankerClient(models_gateway.target, timeout=60) as client:
        default = client.rerank(QUERIES[0], arabic, raw_scores=True)
        tiny = client.rerank(QUERIES[0], arabic, raw_scores=True, model="tiny")
        bert = client.rerank("what is the capital of france", english, raw_scores=True, model="bert-tiny")
    np.testing.assert_allclose(by_index(default), reference.logits(QUERIES[0], arabic), atol=TOL, rtol=0)
    np.testing.assert_allclose(by_index(tiny), by_index(default), atol=TOL, rtol=0)
    np.testing.assert_allclose(by_index(bert), bert_reference.logits("what is the capital of france", english), atol=TOL, rtol=0)
    assert len(bert_reference.encode("what is the capital of france", english[-1])) == 512


async def test_concurrent_mixed_traffic_gets_each_models_own_scores(models_gateway, reference, bert_reference, rng):
    requests = []
    for i in range(16):
        if i % 2:
            requests.append(("bert-tiny", f"query number {i} about cities", ENGLISH[: 1 + i % 4]))
        else:
            requests.append(("tiny", QUERIES[i % len(QUERIES)], mixed_passages(rng, 1 + i % 5, max_sentences=4)))

    async def one(model, query, documents):
        async with AsyncRerankerClient(models_gateway.target, timeout=120) as c:
            return await c.rerank(query, documents, raw_scores=True, model=model)

    answers = await asyncio.gather(*(one(*r) for r in requests))
    for (model, query, documents), results in zip(requests, answers):
        expected = (bert_reference if model == "bert-tiny" else reference).logits(query, documents)
        np.testing.assert_allclose(by_index(results), expected, atol=TOL, rtol=0)


def test_an_unknown_model_is_not_found_naming_the_served_ones(models_gateway):
    with RerankerClient(models_gateway.target, timeout=60) as client:
        with pytest.raises(RerankerError) as err:
            client.rerank("سؤال", ["نص"], model="gpt-4")
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert "tiny" in err.value.details and "bert-tiny" in err.value.details
        assert len(client.rerank("سؤال", ["نص"])) == 1  # the gateway goes on serving


def test_info_lists_every_model_with_its_own_limits_default_first(models_gateway):
    with RerankerClient(models_gateway.target, timeout=60) as client:
        info = client.info()
    assert [m.name for m in info.models] == ["tiny", "bert-tiny"]
    tiny, bert = info.models
    assert tiny.is_default and not bert.is_default
    assert (tiny.max_input_length, bert.max_input_length) == (8192, 512)
    assert (tiny.token_type_ids, bert.token_type_ids) == (False, True)
    assert tiny.triton_model == "tiny" and bert.triton_model == "bert-tiny"
    assert info.model_id == tiny.model_id and info.max_input_length == 8192


def test_requests_are_counted_per_model(models_gateway):
    import urllib.request

    def count(model: str) -> float:
        with urllib.request.urlopen(models_gateway.metrics_url, timeout=5) as response:
            lines = response.read().decode().splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("reranker_requests_total{")
                   and 'code="OK"' in line and 'method="Rerank"' in line and f'model="{model}"' in line)

    before = {m: count(m) for m in ("tiny", "bert-tiny")}
    with RerankerClient(models_gateway.target, timeout=60) as client:
        client.rerank("q", ENGLISH, model="bert-tiny")
        client.rerank("q", ENGLISH, model="bert-tiny")
        client.rerank("سؤال", ["نص"])
    assert {m: count(m) - before[m] for m in before} == {"tiny": 1, "bert-tiny": 2}


def test_make_eval_without_targets_evaluates_every_served_model(models_gateway):
    groups = load_dataset(SAMPLE_DATA)[:3]
    reports = evaluate_targets(groups, parse_targets(models_gateway.target), progress=False)
    assert [r.target for r in reports] == [f"{models_gateway.target}/tiny", f"{models_gateway.target}/bert-tiny"]
    one = evaluate_targets(groups, parse_targets(f"{models_gateway.target}/bert-tiny"), progress=False)
    assert len(one) == 1 and one[0].means.mrr == pytest.approx(reports[1].means.mrr)


# ---------------------------------------------------------------- one Triton per model (the Kubernetes fleet's shape)


@pytest.fixture(scope="module")
def fleet_gateway(tiny_model_dir, bert_tiny_model_dir, tmp_path_factory):
    """deploy/k8s/overlays/multi-model on loopback: each model on its own tritonserver, served there as the one Triton
    model ``ara_reranker`` (model_dir= form, as each model's Triton pod does), one gateway routing each model to its own."""
    tmp = tmp_path_factory.mktemp("fleet")
    with TritonServer(TritonOptions(model_dir=tiny_model_dir, log_path=tmp / "tiny.log")) as tiny, \
            TritonServer(TritonOptions(model_dir=bert_tiny_model_dir, log_path=tmp / "bert.log")) as bert:
        args = {"models": f"tiny={tiny_model_dir},bert-tiny={bert_tiny_model_dir}", "chunk_size": "4",
                "model_endpoints": f"tiny={tiny.grpc_url},bert-tiny={bert.grpc_url}",
                "model_triton_models": "tiny=ara_reranker,bert-tiny=ara_reranker"}
        with GatewayProcess(args, log_path=tmp / "gateway.log") as process:
            for name in ("tiny", "bert-tiny"):
                wait_serving(process, f"reranker.v1.Reranker/{name}")
            yield process, tiny, bert


def test_each_model_is_scored_on_its_own_triton(fleet_gateway, reference, bert_reference, rng):
    process, tiny, bert = fleet_gateway
    arabic = mixed_passages(rng, 6)
    with RerankerClient(process.target, timeout=60) as client:
        tiny_results = client.rerank(QUERIES[0], arabic, raw_scores=True, model="tiny")
        bert_results = client.rerank("what is the capital of france", ENGLISH, raw_scores=True, model="bert-tiny")
        info = client.info()
    np.testing.assert_allclose(by_index(tiny_results), reference.logits(QUERIES[0], arabic), atol=TOL, rtol=0)
    np.testing.assert_allclose(by_index(bert_results), bert_reference.logits("what is the capital of france", ENGLISH), atol=TOL, rtol=0)
    assert [m.triton_model for m in info.models] == ["ara_reranker", "ara_reranker"]
    assert list(info.triton_endpoints) == [tiny.grpc_url, bert.grpc_url]
    # Each model's readiness is watched on its own Triton only (reranker_triton_up{model, endpoint}).
    with urllib.request.urlopen(process.metrics_url, timeout=5) as response:
        up = [line for line in response.read().decode().splitlines() if line.startswith("reranker_triton_up{")]
    pairs = {(re.search(r'model="([^"]+)"', line)[1], re.search(r'endpoint="([^"]+)"', line)[1]) for line in up}
    assert pairs == {("tiny", tiny.grpc_url), ("bert-tiny", bert.grpc_url)}


@pytest.mark.parametrize("knob", ["model_endpoints", "model_triton_models"])
def test_a_route_for_a_model_not_served_or_malformed_is_refused_at_start(knob, tiny_model_dir):
    from ara_reranker_server.errors import StartupError
    from ara_reranker_server.models import load_models
    from ara_reranker_server.settings import Settings

    with pytest.raises(ValueError, match=knob):
        Settings(models=(f"tiny={tiny_model_dir}",), **{knob: ("tiny",)})
    settings = Settings(models=(f"tiny={tiny_model_dir}",), **{knob: ("bge=x",)})
    with pytest.raises(StartupError, match="'bge'"):
        load_models(settings)
