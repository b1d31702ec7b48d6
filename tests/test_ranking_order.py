"""The ranking is the order of the model's logits, for any logits: through the gateway, through the
client's split-and-merge of large candidate lists, and in the evaluation harness.

The model here is the tiny offline model with +30 added to its classifier's bias: every logit lies
above 25, where float32 sigmoids are all exactly 1.0. Ranking by those scores would tie every document
and fall back to input order; ranking by the logits keeps the model's order. (Real models reach such
logits: fp16 and sharp fine-tunes saturate the sigmoid for clearly relevant passages.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ara_reranker_client import RerankerClient
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from ara_reranker_server.ranking import sigmoid
from client.evaluation.dataset import QueryGroup
from client.evaluation.harness import rank_group
from client.evaluation.rankers import LocalRanker, ServiceRanker
from tests.reference import InProcessReference
from tools.arabic_text import QUERIES, mixed_passages

TOL = 1e-4
BIAS_SHIFT = 30.0


@pytest.fixture(scope="module")
def saturated_model_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("saturated") / "tiny-saturated"
    shutil.copytree(tiny_model_dir, target)
    weights = load_file(target / "model.safetensors")
    (bias,) = [name for name in weights if name.endswith("out_proj.bias")]
    weights[bias] = weights[bias] + torch.tensor(BIAS_SHIFT)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.fixture(scope="module")
def saturated_reference(saturated_model_dir) -> InProcessReference:
    return InProcessReference(saturated_model_dir)


@pytest.fixture(scope="module")
def saturated_gateway(saturated_model_dir, tmp_path_factory):
    """Triton and a gateway serving the saturated model; the gateway takes at most 4 documents per
    request, so the client splits larger lists and merges the rankings."""
    tmp = tmp_path_factory.mktemp("saturated-stack")
    options = TritonOptions(model_dir=saturated_model_dir, log_path=tmp / "triton.log")
    with TritonServer(options) as triton:
        args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(saturated_model_dir), "chunk_size": "2",
                "max_documents": "4", "max_inflight_pairs": "64"}
        with GatewayProcess(args, log_path=tmp / "gateway.log") as gateway:
            yield gateway


@pytest.fixture(scope="module")
def case(saturated_reference):
    """A query, 10 documents, and their logits from the in-process model."""
    documents = mixed_passages(np.random.default_rng(17), 10)
    logits = saturated_reference.logits(QUERIES[1], documents)
    assert logits.min() > 17 and np.all(sigmoid(logits) == np.float32(1.0))
    assert len(set(np.round(logits, 3))) == len(logits)  # distinct logits: one right order
    return QUERIES[1], documents, logits


def logit_order(logits: np.ndarray) -> list[int]:
    return sorted(range(len(logits)), key=lambda i: (-float(logits[i]), i))


def test_the_gateway_ranks_by_logit_where_every_score_is_1(saturated_gateway, case):
    query, documents, logits = case
    with RerankerClient(saturated_gateway.target, timeout=60, split_large_requests=False) as client:
        results = client.rerank(query, documents[:4])
        raw = client.rerank(query, documents[:4], raw_scores=True)
    assert [r.index for r in results] == logit_order(logits[:4])
    assert [r.index for r in raw] == [r.index for r in results]  # raw_scores changes the scores, never the order
    assert all(r.score == 1.0 for r in results)
    np.testing.assert_allclose([r.logit for r in results], logits[[r.index for r in results]], atol=TOL, rtol=0)


def test_the_clients_merge_of_a_split_request_ranks_by_logit(saturated_gateway, case):
    query, documents, logits = case
    with RerankerClient(saturated_gateway.target, timeout=60) as client:
        results = client.rerank(query, documents)  # 10 documents: three requests of at most 4
        top = client.rerank(query, documents, top_k=3)
    assert [r.index for r in results] == logit_order(logits)
    assert [r.index for r in top] == logit_order(logits)[:3]


def test_the_evaluation_harness_ranks_by_logit_for_the_service_and_in_process(saturated_gateway, saturated_model_dir, case):
    query, documents, logits = case
    best = logit_order(logits)[0]
    labels = tuple(1.0 if i == best else 0.0 for i in range(len(documents)))
    group = QueryGroup(query=query, documents=tuple(documents), labels=labels, line=1)
    with RerankerClient(saturated_gateway.target, timeout=60) as client:
        service = rank_group(group, ServiceRanker(client))
    local = rank_group(group, LocalRanker(saturated_model_dir))
    for result in (service, local):
        assert list(result.ranking) == logit_order(logits)
        assert result.metrics.reciprocal_rank == 1.0
