"""The NVIDIA NIM and vLLM HTTP APIs through the real gateway and Triton, spoken as raw HTTP: every route,
the answers' shapes and order, the same scores as reranker.v1 and the in-process model (NIM: the raw logit;
vLLM: sigmoid), truncation, each dialect's errors naming the field, placeholder API keys, model names, health,
TEI's /rerank beside vLLM's, and the OpenAPI description. The real client libraries are in
test_nim_vllm_clients.py."""

from __future__ import annotations

import json

import httpx
import jsonschema
import numpy as np
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ara_reranker_server.api.nim import RANKING_PATHS
from tests.helpers import assert_same_ranking, v1_ranking
from tools.arabic_text import QUERIES, long_passage, mixed_passages, passage

MODEL = "offline-tiny"  # the name the conftest gateway serves the tiny model under
KEY = "nim-vllm-test-key"
UNDERSCORED = "ara_tiny"  # served name of the guarded gateway: LiteLLM writes it "ara.tiny" in NIM bodies


@pytest.fixture(scope="module")
def documents(rng):
    return mixed_passages(rng, 8)


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def logits(gateway, documents):
    """reranker.v1's raw scores (logits) by index, for QUERIES[0] and the documents."""
    return v1_ranking(gateway.target, QUERIES[0], documents, raw_scores=True)


@pytest.fixture(scope="module")
def guarded(make_gateway):
    """A gateway with an API key, a 512-token max input length and a served name with an underscore."""
    return make_gateway(api_keys=KEY, max_input_length=512, model_name=UNDERSCORED, model_id=MODEL)


def nim_body(query: str, documents: list[str], **fields) -> dict:
    return {"model": MODEL, "query": {"text": query}, "passages": [{"text": d} for d in documents], **fields}


def by_index(items, key: str) -> np.ndarray:
    return np.array([r[key] for r in sorted(items, key=lambda r: r["index"])], dtype=np.float32)


# ------------------------------------------------------------------------------------------------ NIM
@pytest.mark.parametrize("path", [*RANKING_PATHS, f"/v1/retrieval/{MODEL}/reranking"])
def test_nim_ranking_is_reranker_v1s_order_with_raw_logits(http, reference, documents, logits, path):
    # The whole URL: httpx would read "//ranking" beside a base URL as a host.
    response = http.post(str(http.base_url).rstrip("/") + path, json=nim_body(QUERIES[0], documents))
    assert response.status_code == 200, response.text
    body = response.json()
    rankings = body["rankings"]
    assert_same_ranking([(r["index"], r["logit"]) for r in rankings], logits)
    got = [r["logit"] for r in rankings]
    assert got == sorted(got, reverse=True)  # clients keep the first top_n as sent
    np.testing.assert_allclose(by_index(rankings, "logit"), reference.logits(QUERIES[0], documents), atol=1e-4, rtol=0)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


def test_nim_model_null_or_absent_is_the_default_and_top_k_cuts(http, documents, logits):
    for fields in ({"model": None}, {}):
        body = {k: v for k, v in nim_body(QUERIES[0], documents).items() if k != "model"} | fields
        response = http.post("/v1/ranking", json=body)
        assert response.status_code == 200, response.text
        assert_same_ranking([(r["index"], r["logit"]) for r in response.json()["rankings"]], logits)
    top = http.post(f"/v1/retrieval/{MODEL}/reranking", json=nim_body(QUERIES[0], documents, model="ignored", top_k=3))
    assert top.status_code == 200, top.text  # the path names the model
    assert_same_ranking([(r["index"], r["logit"]) for r in top.json()["rankings"]], logits, top=3)


def test_nim_model_list_names_every_served_name(http):
    for path in ("/v1/models", "/models"):
        body = http.get(path).json()
        assert body["object"] == "list"
        assert [card["id"] for card in body["data"]] == [MODEL]
        card = body["data"][0]
        assert card["object"] == "model" and card["root"] == MODEL and isinstance(card["created"], int) and card["owned_by"]


def test_nim_health_routes(http):
    assert http.get("/v1/health/live").json() == {"object": "health-response", "message": "Service is live."}
    ready = http.get("/v1/health/ready")
    assert ready.status_code == 200 and ready.json()["message"] == "Service is ready."


def test_nim_truncate_none_refuses_a_long_pair_and_end_cuts_it(guarded, reference, rng):
    documents = [long_passage(rng), passage(rng, 3)]
    with httpx.Client(base_url=guarded.http_url, timeout=60, headers={"authorization": f"Bearer {KEY}"}) as http:
        for fields in ({}, {"truncate": "NONE"}):  # NONE is the default, as NIM's
            refused = http.post("/v1/ranking", json=nim_body(QUERIES[0], documents, model=UNDERSCORED, **fields))
            assert refused.status_code == 422, refused.text
            body = refused.json()
            assert body["object"] == "error" and "document 0" in body["message"] and "512" in body["message"]
        cut = http.post("/v1/ranking", json=nim_body(QUERIES[0], documents, model=UNDERSCORED, truncate="END"))
        assert cut.status_code == 200, cut.text
        np.testing.assert_allclose(by_index(cut.json()["rankings"], "logit"), reference.logits(QUERIES[0], documents, 512),
                                   atol=1e-4, rtol=0)


def test_nim_names_litellms_spelling_and_lists_every_name(guarded):
    with httpx.Client(base_url=guarded.http_url, timeout=60, headers={"authorization": f"Bearer {KEY}"}) as http:
        ids = [card["id"] for card in http.get("/v1/models").json()["data"]]
        assert ids[0] == UNDERSCORED and set(ids) == {UNDERSCORED, MODEL, "ara.tiny"}
        for name in (UNDERSCORED, "ara.tiny", MODEL):
            response = http.post("/v1/ranking", json=nim_body(QUERIES[1], ["نص قصير"], model=name))
            assert response.status_code == 200, (name, response.text)
        unknown = http.post("/v1/ranking", json=nim_body(QUERIES[1], ["نص"], model="nvidia/nv-rerankqa-mistral-4b-v3"))
        assert unknown.status_code == 404 and unknown.json()["object"] == "error" and unknown.json()["detail"] == "model"


@pytest.mark.parametrize("body, needle", [
    ({"model": MODEL, "query": {"text": "سؤال"}}, "passages: missing"),
    ({"model": MODEL, "query": "سؤال", "passages": [{"text": "نص"}]}, "query"),
    ({"model": MODEL, "query": {"text": "سؤال"}, "passages": [{"txt": "نص"}]}, "passages.0.text: missing"),
    ({"model": MODEL, "query": {"text": "سؤال"}, "passages": []}, "passages is empty"),
    ({"model": MODEL, "query": {"text": "سؤال"}, "passages": [{"text": "نص"}], "truncate": "START"}, "truncate"),
    ({"model": MODEL, "query": {"text": "سؤال"}, "passages": [{"text": "نص"}], "top_k": 0}, "top_k"),
])
def test_nim_bad_bodies_are_422_naming_the_field(http, body, needle):
    response = http.post("/v1/ranking", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["object"] == "error" and needle in response.json()["message"], response.text


# ----------------------------------------------------------------------------------------------- vLLM
def test_vllm_score_pairs_one_to_one_one_to_many_and_pairwise_in_input_order(http, reference, documents):
    one = http.post("/score", json={"model": MODEL, "text_1": QUERIES[0], "text_2": documents[0]})
    assert one.status_code == 200, one.text
    np.testing.assert_allclose([d["score"] for d in one.json()["data"]], reference.scores(QUERIES[0], documents[:1]), atol=1e-4, rtol=0)

    many = http.post("/v1/score", json={"text_1": [QUERIES[0]], "text_2": documents})
    body = many.json()
    assert body["object"] == "list" and body["model"] == MODEL and body["id"] and isinstance(body["created"], int)
    assert [d["index"] for d in body["data"]] == list(range(len(documents))) and {d["object"] for d in body["data"]} == {"score"}
    np.testing.assert_allclose([d["score"] for d in body["data"]], reference.scores(QUERIES[0], documents), atol=1e-4, rtol=0)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0

    # Pairwise, queries repeating out of order: one core call per distinct query, answered in pair order.
    queries = [QUERIES[i % 3] for i in (0, 1, 2, 1, 0, 2, 0, 1)][: len(documents)]
    for shape in ({"text_1": queries, "text_2": documents}, {"queries": queries, "documents": documents}):
        pairwise = http.post("/score", json={"model": MODEL, **shape})
        assert pairwise.status_code == 200, pairwise.text
        expected = [reference.scores(q, [d])[0] for q, d in zip(queries, documents)]
        np.testing.assert_allclose([d["score"] for d in pairwise.json()["data"]], expected, atol=1e-4, rtol=0)


def test_vllm_score_use_activation_false_is_the_logit(http, reference, documents):
    body = http.post("/score", json={"text_1": QUERIES[2], "text_2": documents[:3], "use_activation": False}).json()
    np.testing.assert_allclose([d["score"] for d in body["data"]], reference.logits(QUERIES[2], documents[:3]), atol=1e-4, rtol=0)


def test_vllm_rerank_shape_order_and_top_n(http, reference, documents):
    expected = list(zip(range(len(documents)), reference.scores(QUERIES[3], documents).tolist()))
    for top_n, top in ((None, None), (0, None), (3, 3)):
        body = {"model": MODEL, "query": QUERIES[3], "documents": documents, "return_documents": True, "rank_fields": ["text"]}
        response = http.post("/rerank", json=body | ({"top_n": top_n} if top_n is not None else {}))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["id"] and answer["model"] == MODEL and answer["usage"]["total_tokens"] > 0
        assert_same_ranking([(r["index"], r["relevance_score"]) for r in answer["results"]], expected, top)
        assert all(r["document"] == {"text": documents[r["index"]]} for r in answer["results"])


def test_tei_rerank_still_answers_bodies_with_texts(http, reference, documents):
    tei = http.post("/rerank", json={"query": QUERIES[3], "texts": documents, "return_text": True})
    assert tei.status_code == 200 and isinstance(tei.json(), list), tei.text
    np.testing.assert_allclose(by_index(tei.json(), "score"), reference.scores(QUERIES[3], documents), atol=1e-4, rtol=0)
    both = http.post("/rerank", json={"query": QUERIES[3], "texts": documents[:2], "documents": documents})
    assert isinstance(both.json(), list) and len(both.json()) == 2  # texts: TEI's body
    neither = http.post("/rerank", json={"query": QUERIES[3]})
    assert neither.status_code == 422 and neither.json()["error_type"] == "Validation"  # TEI's answer, as before


def test_cohere_paths_answer_vllm_clients_too(http, documents):
    for path in ("/v1/rerank", "/v2/rerank"):
        body = http.post(path, json={"model": MODEL, "query": QUERIES[0], "documents": documents, "return_documents": True}).json()
        assert body["id"] and body["model"] == MODEL and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > 0
        assert all(r["document"]["text"] == documents[r["index"]] for r in body["results"])


def test_vllm_truncation_refuses_a_long_pair_unless_asked(guarded, reference, rng):
    documents = [passage(rng, 2), long_passage(rng)]
    with httpx.Client(base_url=guarded.http_url, timeout=60, headers={"authorization": f"Bearer {KEY}"}) as http:
        refused = http.post("/score", json={"text_1": QUERIES[0], "text_2": documents})
        assert refused.status_code == 400 and "document 1" in refused.json()["error"]["message"], refused.text
        for side in ("right", "left"):
            cut = http.post("/rerank", json={"query": QUERIES[0], "documents": documents, "truncate_prompt_tokens": -1,
                                             "truncation_side": side})
            assert cut.status_code == 200, cut.text
            np.testing.assert_allclose(by_index(cut.json()["results"], "relevance_score"),
                                       reference.scores(QUERIES[0], documents, 512, side=side), atol=1e-4, rtol=0)
        smaller = http.post("/rerank", json={"query": QUERIES[0], "documents": documents, "truncate_prompt_tokens": 100})
        assert smaller.status_code == 400 and smaller.json()["error"]["param"] == "truncate_prompt_tokens"


@pytest.mark.parametrize("path, body, status, param, needle", [
    ("/score", {"text_1": "سؤال"}, 400, "text_2", "at least one text_pair"),
    ("/score", {"model": MODEL}, 400, "text_1", "text_1: missing"),
    ("/score", {"text_1": ["a", "b"], "text_2": ["x", "y", "z"]}, 400, "text_2", "1:1, 1:N or N:N"),
    ("/score", {"text_1": [], "text_2": ["x"]}, 400, "text_1", "at least one text element"),
    ("/v1/score", {"text_1": "سؤال", "text_2": [1, 2]}, 400, "text_2", "text_2"),
    ("/score", {"model": "nope", "text_1": "سؤال", "text_2": "نص"}, 404, "model", "not served here"),
    ("/rerank", {"query": "سؤال", "documents": ["نص"], "top_n": -1}, 400, "top_n", "top_n"),
    ("/rerank", {"documents": ["نص"]}, 400, "query", "query: missing"),
    ("/rerank", {"query": "سؤال", "documents": []}, 400, None, "documents is empty"),
    ("/rerank", {"query": "سؤال", "documents": ["نص"], "model": "nope"}, 404, "model", "not served here"),
])
def test_vllm_errors_in_vllms_shape_naming_the_field(http, path, body, status, param, needle):
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["param"] == param and needle in error["message"], error
    assert error["type"] == {400: "BadRequestError", 404: "NotFoundError"}[status]


def test_a_body_that_is_not_json_is_a_4xx_in_each_dialect(http):
    for path, read in (("/v1/ranking", lambda b: b["message"]), ("/score", lambda b: b["error"]["message"])):
        response = http.post(path, content=b"{nope", headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500 and "body" in read(response.json()), response.text


# ----------------------------------------------------------------------------------------------- auth
@pytest.mark.parametrize("header", ["Bearer NO_API_KEY_PROVIDED", "Bearer **********", "Bearer fake-api-key", None])
def test_placeholder_keys_are_ignored_while_the_gateway_has_none(http, documents, header):
    headers = {"authorization": header} if header else {}
    assert http.post("/v1/ranking", json=nim_body(QUERIES[0], documents[:2]), headers=headers).status_code == 200
    assert http.post("/rerank", json={"query": QUERIES[0], "documents": documents[:2]}, headers=headers).status_code == 200
    assert http.post("/score", json={"text_1": QUERIES[0], "text_2": documents[:2]}, headers=headers).status_code == 200
    assert http.get("/v1/models", headers=headers).status_code == 200


def test_with_keys_only_the_key_is_let_in_and_health_stays_open(guarded):
    routes = [("POST", "/v1/ranking", nim_body("سؤال", ["نص"], model=UNDERSCORED)), ("GET", "/v1/models", None),
              ("POST", "/score", {"text_1": "سؤال", "text_2": "نص"}), ("POST", "/rerank", {"query": "سؤال", "documents": ["نص"]})]
    with httpx.Client(base_url=guarded.http_url, timeout=60) as http:
        for method, path, body in routes:
            for header in ("Bearer NO_API_KEY_PROVIDED", "Bearer **********", "Bearer fake-api-key", None):
                denied = http.request(method, path, json=body, headers={"authorization": header} if header else {})
                assert denied.status_code == 401, (path, header, denied.text)
            allowed = http.request(method, path, json=body, headers={"authorization": f"Bearer {KEY}"})
            assert allowed.status_code == 200, (path, allowed.text)
        assert http.post("/v1/ranking", json=nim_body("سؤال", ["نص"])).json()["object"] == "error"
        assert http.post("/score", json={"text_1": "a", "text_2": "b"}).json()["error"]["type"] == "UnauthorizedError"
        assert http.get("/v1/health/live").status_code == 200 and http.get("/v1/health/ready").status_code == 200


# ------------------------------------------------------------------------------------ OpenAPI, metrics
def test_the_served_openapi_describes_the_new_routes(http, documents):
    spec = http.get("/openapi.json").json()
    assert {*RANKING_PATHS, "/v1/retrieval/{model}/reranking", "/v1/models", "/models", "/v1/health/live",
            "/v1/health/ready", "/score", "/v1/score", "/rerank"} <= set(spec["paths"])
    registry = Registry().with_resource("urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012))

    def check(path: str, body, answer) -> None:
        operation = spec["paths"][path]["post"]
        for schema, instance in ((operation["requestBody"]["content"]["application/json"]["schema"], body),
                                 (operation["responses"]["200"]["content"]["application/json"]["schema"], answer)):
            resolved = json.loads(json.dumps(schema).replace('"#/components', '"urn:spec#/components'))
            jsonschema.Draft202012Validator(resolved, registry=registry).validate(instance)

    for path, body in (("/v1/ranking", nim_body(QUERIES[0], documents[:3])),
                       ("/score", {"text_1": QUERIES[0], "text_2": documents[:3]}),
                       ("/rerank", {"query": QUERIES[0], "documents": documents[:3]}),
                       ("/rerank", {"query": QUERIES[0], "texts": documents[:3]})):
        check(path, body, http.post(path, json=body).json())
    retrieval = spec["paths"]["/v1/retrieval/{model}/reranking"]["post"]
    assert retrieval["parameters"][0]["name"] == "model"
    assert spec["paths"]["/v1/health/ready"]["get"]["security"] == [{}]


def test_nim_and_vllm_calls_are_counted_under_their_api(gateway, http, documents):
    def count(api: str, code: str) -> float:
        text = httpx.get(gateway.metrics_url).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("reranker_requests_total{") and f'api="{api}"' in line and f'code="{code}"' in line)

    before = {(api, code): count(api, code) for api in ("nim", "vllm") for code in ("OK", "INVALID_ARGUMENT")}
    http.post("/v1/ranking", json=nim_body(QUERIES[0], documents[:2]))
    http.post("/v1/ranking", json={"query": {"text": "سؤال"}})
    http.post("/score", json={"text_1": [QUERIES[0], QUERIES[1]], "text_2": documents[:2]})  # two queries: two core calls
    http.post("/score", json={"text_1": "a"})
    assert count("nim", "OK") == before[("nim", "OK")] + 1
    assert count("nim", "INVALID_ARGUMENT") == before[("nim", "INVALID_ARGUMENT")] + 1
    assert count("vllm", "OK") == before[("vllm", "OK")] + 2
    assert count("vllm", "INVALID_ARGUMENT") == before[("vllm", "INVALID_ARGUMENT")] + 1
