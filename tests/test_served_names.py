"""The names a user is told to use answer in every API: the gateway started exactly as ``make run MODEL=x``
starts it (server/ara_reranker_server/launcher/run.py's served_model_args) serves the model under the short name ``x`` and its hub id.

``MODEL=ara`` is run here on the offline tiny weights (the real ones need the hub): what is checked is the
naming, which does not depend on the weights."""

from __future__ import annotations

import grpc
import httpx
import pytest

from ara_reranker_client import RerankerClient
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.run import served_model_args
from ara_reranker_server.tei.v1 import tei_pb2, tei_pb2_grpc
from tests.helpers import assert_same_ranking
from tools.arabic_text import QUERIES

HUB_ID = {"ara": "Omartificial-Intelligence-Space/ARA-Reranker-V1", "tiny": "offline-tiny (random weights, real tokenizer)"}
DOCUMENTS = ["الرياض عاصمة المملكة العربية السعودية.", "القاهرة عاصمة مصر.", "الشاي الأخضر غني بمضادات الأكسدة."]


@pytest.fixture(scope="module", params=["tiny", "ara"])
def served(request, triton, tiny_model_dir, tmp_path_factory):
    """(short name, gateway) for ``make run MODEL=<short name>``."""
    name = request.param
    args = {"triton_endpoints": triton.grpc_url, **served_model_args([name], {name: tiny_model_dir})}
    with GatewayProcess(args, log_path=tmp_path_factory.mktemp("names") / "gateway.log") as process:
        yield name, process


def test_the_short_name_and_the_hub_id_answer_in_every_api(served):
    name, gateway = served
    with RerankerClient(gateway.target, timeout=60) as client:
        expected = [(r.index, r.score) for r in client.rerank(QUERIES[0], DOCUMENTS)]
        info = client.info()
        for model in (name, HUB_ID[name]):
            ranked = [(r.index, r.score) for r in client.rerank(QUERIES[0], DOCUMENTS, model=model)]
            assert_same_ranking(ranked, expected)
    served_model = info.models[0]
    assert served_model.name == name and HUB_ID[name] in served_model.aliases and served_model.model_id == HUB_ID[name]

    with httpx.Client(base_url=gateway.http_url, timeout=60) as http:
        for model in (name, HUB_ID[name]):
            for path in ("/v1/rerank", "/v2/rerank"):  # Cohere v1 / Jina, Cohere v2
                response = http.post(path, json={"model": model, "query": QUERIES[0], "documents": DOCUMENTS})
                assert response.status_code == 200, (path, model, response.text)
                assert_same_ranking([(r["index"], r["relevance_score"]) for r in response.json()["results"]], expected)
        response = http.post("/v2/rerank", json={"model": "no-such-model", "query": QUERIES[0], "documents": DOCUMENTS})
        assert response.status_code == 404 and name in response.text, response.text
        assert http.get("/info").json()["model_id"] == HUB_ID[name]

    with grpc.insecure_channel(gateway.target) as channel:  # tei.v1 has no model field: it reports the model id
        assert tei_pb2_grpc.InfoStub(channel).Info(tei_pb2.InfoRequest(), timeout=30).model_id == HUB_ID[name]
