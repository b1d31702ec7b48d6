"""The HTTP rerank APIs (Cohere v1/v2, Jina, TEI) through the real gateway and Triton, spoken as raw
HTTP: the same scores as reranker.v1 (and the in-process model), each API's fields, status codes and
error bodies, auth, body limits, and the served OpenAPI description. The real client libraries are in
test_api_clients.py."""

from __future__ import annotations

import json

import httpx
import jsonschema
import numpy as np
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from ara_reranker_client import RerankerClient
from ara_reranker_server.api.large_messages import INLINE_BYTES
from tests.helpers import SAME_SCORE, assert_same_ranking, v1_scores
from tools.arabic_text import QUERIES, long_passage, mixed_passages, passage

KEY = "http-test-key"
MODEL = "offline-tiny"  # the name the conftest gateway serves the tiny model under


@pytest.fixture(scope="module")
def documents(rng):
    return mixed_passages(rng, 9) + [""]


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def guarded(make_gateway):
    """A gateway with an API key, a 200 kB body limit and a 512-token max input length."""
    return make_gateway(api_keys=KEY, max_message_bytes=200_000, max_input_length=512, model_id=MODEL)


def by_index(results, key: str) -> np.ndarray:
    return np.array([r[key] for r in sorted(results, key=lambda r: r["index"])], dtype=np.float32)


def test_every_http_api_returns_reranker_v1s_scores_and_order(http, client, reference, documents):
    query = QUERIES[0]
    ranking = [(r.index, r.score) for r in client.rerank(query, documents)]
    np.testing.assert_allclose([s for _, s in sorted(ranking)], reference.scores(query, documents), atol=1e-4, rtol=0)

    v1 = http.post("/v1/rerank", json={"query": query, "documents": documents})
    v2 = http.post("/v2/rerank", json={"model": MODEL, "query": query, "documents": documents})
    tei = http.post("/rerank", json={"query": query, "texts": documents})
    for response in (v1, v2, tei):
        assert response.status_code == 200, response.text
    for results, key in ((v1.json()["results"], "relevance_score"), (v2.json()["results"], "relevance_score"), (tei.json(), "score")):
        assert_same_ranking([(r["index"], r[key]) for r in results], ranking)


def test_raw_scores_are_the_logits(http, client, reference, documents):
    logits = v1_scores(client, QUERIES[1], documents, raw_scores=True)
    tei = http.post("/rerank", json={"query": QUERIES[1], "texts": documents, "raw_scores": True}).json()
    np.testing.assert_allclose(by_index(tei, "score"), logits, atol=SAME_SCORE, rtol=0)
    np.testing.assert_allclose(logits, reference.logits(QUERIES[1], documents), atol=1e-4, rtol=0)


def test_cohere_v1_and_jina_response_shape_top_n_and_documents(http, client, documents):
    body = http.post("/v1/rerank", json={"model": MODEL, "query": QUERIES[2], "documents": documents, "top_n": 3}).json()
    ranking = [(r.index, r.score) for r in client.rerank(QUERIES[2], documents)]
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in body["results"]], ranking, top=3)
    assert all(r["document"] == {"text": documents[r["index"]]} for r in body["results"])  # Jina's default: returned
    assert body["meta"] == {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}}
    assert body["model"] == MODEL and body["usage"]["total_tokens"] > 0 and body["id"]
    bare = http.post("/v1/rerank", json={"query": QUERIES[2], "documents": documents, "return_documents": False}).json()
    assert all("document" not in r for r in bare["results"])


def test_cohere_v2_shape_model_required_and_documents_on_request(http, documents):
    body = http.post("/v2/rerank", json={"model": MODEL, "query": QUERIES[0], "documents": documents, "top_n": 2}).json()
    assert len(body["results"]) == 2 and all("document" not in r for r in body["results"])
    assert body["meta"]["api_version"] == {"version": "2"}
    with_docs = http.post("/v2/rerank", json={"model": MODEL, "query": QUERIES[0], "documents": documents,
                                              "return_documents": True}).json()
    assert all(r["document"]["text"] == documents[r["index"]] for r in with_docs["results"])
    missing = http.post("/v2/rerank", json={"query": QUERIES[0], "documents": documents})
    assert missing.status_code == 400 and "model" in missing.json()["message"]


def test_object_documents_are_ranked_on_their_rank_fields_and_echoed(http, client, documents):
    objects = [{"title": f"عنوان {i}", "text": d, "id": i} for i, d in enumerate(documents[:5])]
    plain = http.post("/v1/rerank", json={"query": QUERIES[3], "documents": objects}).json()
    np.testing.assert_allclose(by_index(plain["results"], "relevance_score"), v1_scores(client, QUERIES[3], documents[:5]), atol=SAME_SCORE, rtol=0)
    assert all(r["document"] == objects[r["index"]] for r in plain["results"])
    both = http.post("/v1/rerank", json={"query": QUERIES[3], "documents": objects, "rank_fields": ["title", "text"]}).json()
    texts = [f"title: {o['title']}\ntext: {o['text']}" for o in objects]
    np.testing.assert_allclose(by_index(both["results"], "relevance_score"), v1_scores(client, QUERIES[3], texts), atol=SAME_SCORE, rtol=0)
    missing = http.post("/v1/rerank", json={"query": QUERIES[3], "documents": objects, "rank_fields": ["body"]})
    assert missing.status_code == 400 and "documents.0 has no field 'body'" in missing.json()["message"]


def test_max_tokens_per_doc_cuts_documents_as_reranker_v1s_max_document_tokens(http, client, reference, rng):
    documents = [passage(rng, 30), passage(rng, 3), passage(rng, 60)]
    body = http.post("/v2/rerank", json={"model": MODEL, "query": QUERIES[0], "documents": documents, "max_tokens_per_doc": 40}).json()
    expected = v1_scores(client, QUERIES[0], documents, max_document_tokens=40)
    np.testing.assert_allclose(by_index(body["results"], "relevance_score"), expected, atol=SAME_SCORE, rtol=0)
    capped = reference.logits_of_ids([reference.capped(QUERIES[0], d, 40) for d in documents])
    np.testing.assert_allclose(expected, 1 / (1 + np.exp(-capped)), atol=1e-4, rtol=0)


def test_max_chunks_per_doc_scores_windows_like_truncation_split(guarded, rng):
    """Cohere v1 splits a long document and ranks it by its best chunk: reranker.v1's TRUNCATION_SPLIT."""
    documents = [long_passage(rng), passage(rng, 5), long_passage(rng)]
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=guarded.http_url, timeout=60, headers=headers) as http, \
            RerankerClient(guarded.target, timeout=60, api_key=KEY) as client:
        for chunks in (1, 3):
            body = http.post("/v1/rerank", json={"query": QUERIES[1], "documents": documents, "max_chunks_per_doc": chunks})
            assert body.status_code == 200, body.text
            expected = v1_scores(client, QUERIES[1], documents, split=True, max_windows=chunks)
            np.testing.assert_allclose(by_index(body.json()["results"], "relevance_score"), expected, atol=SAME_SCORE, rtol=0)
        assert body.json()["meta"]["billed_units"]["search_units"] == 1


def test_tei_truncation_direction_and_truncate(guarded, reference, rng):
    """At 512 tokens: "left" keeps a long document's end, as transformers' truncation_side="left" and
    reranker.v1's TRUNCATION_START; truncate false refuses it (422); null is the server's default (cut)."""
    documents = [long_passage(rng), passage(rng, 4), long_passage(rng)]
    with httpx.Client(base_url=guarded.http_url, timeout=60, headers={"authorization": f"Bearer {KEY}"}) as http, \
            RerankerClient(guarded.target, timeout=60, api_key=KEY) as client:
        left = http.post("/rerank", json={"query": QUERIES[0], "texts": documents, "truncation_direction": "Left"}).json()
        expected = v1_scores(client, QUERIES[0], documents, truncation="start")
        np.testing.assert_allclose(by_index(left, "score"), expected, atol=SAME_SCORE, rtol=0)
        np.testing.assert_allclose(expected, reference.scores(QUERIES[0], documents, 512, side="left"), atol=1e-4, rtol=0)
        assert not np.allclose(expected, v1_scores(client, QUERIES[0], documents), atol=1e-4)  # the other end was kept
        refused = http.post("/rerank", json={"query": QUERIES[0], "texts": documents, "truncate": False})
        assert refused.status_code == 422 and refused.json()["error_type"] == "Validation"
        assert "document 0" in refused.json()["error"] and "512" in refused.json()["error"]
        default = http.post("/rerank", json={"query": QUERIES[0], "texts": documents, "truncate": None})
        assert default.status_code == 200  # null: the server's default, which truncates


def test_tei_returns_a_bare_array_with_text_on_request_and_info(http, gateway, documents):
    ranks = http.post("/rerank", json={"query": QUERIES[4], "texts": documents, "return_text": True})
    assert ranks.headers["x-compute-tokens"].isdigit() and ranks.headers["x-request-id"]
    assert all(r["text"] == documents[r["index"]] for r in ranks.json())
    assert [r["score"] for r in ranks.json()] == sorted((r["score"] for r in ranks.json()), reverse=True)
    info = http.get("/info").json()
    assert info["model_id"] == "offline-tiny" and "reranker" in info["model_type"]
    assert info["max_input_length"] == 8192 and info["max_client_batch_size"] == 1000 and info["auto_truncate"] is True


@pytest.mark.parametrize("path, body, status, needle", [
    ("/v1/rerank", {"query": "سؤال", "documents": []}, 400, "documents is empty"),
    ("/v1/rerank", {"query": 5, "documents": ["نص"]}, 400, "query"),
    ("/v1/rerank", {"query": "سؤال"}, 400, "documents: missing"),
    ("/v1/rerank", {"query": "سؤال", "documents": ["نص", 7]}, 400, "documents.1"),
    ("/v1/rerank", {"query": "سؤال", "documents": ["نص"], "top_n": 0}, 400, "top_n must be at least 1"),
    ("/v1/rerank", {"query": "سؤال", "documents": ["نص"], "max_chunks_per_doc": 0}, 400, "max_chunks_per_doc"),
    ("/v1/rerank", {"query": "سؤال", "documents": ["نص"], "model": "rerank-v3.5"}, 404, "'rerank-v3.5' is not served here"),
    ("/v2/rerank", {"model": MODEL, "query": "سؤال", "documents": ["نص"], "max_tokens_per_doc": -1}, 400, "max_tokens_per_doc"),
    ("/v2/rerank", {"model": "nope", "query": "سؤال", "documents": ["نص"]}, 404, "served models: offline-tiny"),
    ("/v2/rerank", {"model": MODEL, "query": " ", "documents": ["نص"]}, 400, "query is empty"),
])
def test_cohere_errors_name_the_field_in_coheres_shape(http, path, body, status, needle):
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["message"]


@pytest.mark.parametrize("body, status, error_type, needle", [
    ({"query": "سؤال", "texts": []}, 400, "Empty", "`texts` cannot be empty"),
    ({"query": "سؤال"}, 422, "Validation", "texts: missing"),
    ({"query": "سؤال", "texts": ["نص"], "truncation_direction": "middle"}, 422, "Validation", "truncation_direction"),
    ({"query": "سؤال", "texts": ["نص"] * 1001}, 422, "Validation", "max_documents=1000"),
    ({"query": "سؤال", "texts": ["نص"], "model": "nope"}, 404, "Validation", "not served here"),
])
def test_tei_errors_in_teis_shape(http, body, status, error_type, needle):
    response = http.post("/rerank", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error_type"] == error_type and needle in response.json()["error"]


def test_null_is_absent_and_unknown_fields_are_ignored(http, documents):
    v1 = http.post("/v1/rerank", json={"query": QUERIES[0], "documents": documents, "top_n": None, "model": None,
                                       "return_documents": None, "max_chunks_per_doc": None, "future_field": {"x": 1}})
    v2 = http.post("/v2/rerank", json={"model": MODEL, "query": QUERIES[0], "documents": documents, "top_n": None,
                                       "max_tokens_per_doc": None, "priority": 3, "rank_fields": None})
    tei = http.post("/rerank", json={"query": QUERIES[0], "texts": documents, "raw_scores": None, "return_text": None,
                                     "truncate": None, "truncation_direction": None, "other": True})
    assert (v1.status_code, v2.status_code, tei.status_code) == (200, 200, 200), (v1.text, v2.text, tei.text)
    assert len(v1.json()["results"]) == len(documents) == len(tei.json())


def test_a_body_that_is_not_json_is_a_4xx_in_each_dialect(http):
    for path, key in (("/v1/rerank", "message"), ("/v2/rerank", "message"), ("/rerank", "error")):
        for content in (b"{not json", "[1, 2]".encode(), "\udcff".encode("utf-8", "surrogatepass")):
            response = http.post(path, content=content, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500 and "body" in response.json()[key], (path, content, response.text)


def test_unknown_paths_and_methods_get_json_errors(http):
    missing = http.post("/v3/rerank", json={})
    assert missing.status_code == 404 and "POST /v1/rerank" in missing.json()["message"]
    wrong = http.get("/v1/rerank")
    assert wrong.status_code == 405 and "POST" in wrong.json()["message"]


def test_api_keys_guard_every_http_api_and_leave_health_open(guarded):
    routes = [("POST", "/v1/rerank", {"query": "سؤال", "documents": ["نص"]}), ("POST", "/v2/rerank", {"model": MODEL, "query": "سؤال", "documents": ["نص"]}),
              ("POST", "/rerank", {"query": "سؤال", "texts": ["نص"]}), ("GET", "/info", None)]
    with httpx.Client(base_url=guarded.http_url, timeout=60) as http:
        for method, path, body in routes:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEY}):
                denied = http.request(method, path, json=body, headers=headers)
                assert denied.status_code == 401, (path, headers, denied.text)
            allowed = http.request(method, path, json=body, headers={"authorization": f"Bearer {KEY}"})
            assert allowed.status_code == 200, (path, allowed.text)
        assert http.get("/health").status_code == 200
        assert http.get("/openapi.json").status_code == 200


def test_a_body_over_the_limit_is_413_and_the_gateway_serves_on(guarded):
    headers = {"authorization": f"Bearer {KEY}"}
    big = {"query": "سؤال", "texts": ["ن" * 60_000] * 4}  # ~480 kB of UTF-8 over a 200 kB limit
    with httpx.Client(base_url=guarded.http_url, timeout=60, headers=headers) as http:
        tei = http.post("/rerank", json=big)
        assert tei.status_code == 413 and tei.json()["error_type"] == "Validation"
        cohere = http.post("/v1/rerank", json={"query": "سؤال", "documents": big["texts"]})
        assert cohere.status_code == 413 and "max_message_bytes=200000" in cohere.json()["message"]
        assert http.post("/rerank", json={"query": "سؤال", "texts": ["نص"]}).status_code == 200


def test_the_served_openapi_describes_what_the_apis_accept_and_answer(http, documents):
    spec = http.get("/openapi.json").json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/info", "/health"} <= set(spec["paths"])
    registry = Registry().with_resource("urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012))

    def check(path: str, method: str, body, answer) -> None:
        operation = spec["paths"][path][method]
        for schema, instance in ((operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema"), body),
                                 (operation["responses"]["200"]["content"]["application/json"]["schema"], answer)):
            if schema is not None:
                resolved = json.loads(json.dumps(schema).replace('"#/components', '"urn:spec#/components'))
                jsonschema.Draft202012Validator(resolved, registry=registry).validate(instance)

    v1 = {"query": QUERIES[0], "documents": documents[:3] + [{"text": "نص", "id": 1}], "top_n": 2}
    check("/v1/rerank", "post", v1, http.post("/v1/rerank", json=v1).json())
    v2 = {"model": MODEL, "query": QUERIES[0], "documents": documents[:3], "return_documents": True}
    check("/v2/rerank", "post", v2, http.post("/v2/rerank", json=v2).json())
    tei = {"query": QUERIES[0], "texts": documents[:3], "return_text": True}
    check("/rerank", "post", tei, http.post("/rerank", json=tei).json())
    check("/info", "get", None, http.get("/info").json())
    with pytest.raises(jsonschema.ValidationError):  # and the schema is not vacuous
        check("/rerank", "post", {"query": QUERIES[0]}, [])


def test_http_calls_are_counted_per_api_with_grpc_status_names(gateway, http):
    def count(api: str, code: str) -> float:
        text = httpx.get(gateway.metrics_url).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("reranker_requests_total{") and f'api="{api}"' in line and f'code="{code}"' in line)

    before = {(api, code): count(api, code) for api in ("v1/rerank", "tei") for code in ("OK", "INVALID_ARGUMENT")}
    http.post("/v1/rerank", json={"query": "سؤال", "documents": ["نص"]})
    http.post("/rerank", json={"query": "سؤال", "texts": []})
    http.post("/rerank", content=b"{", headers={"content-type": "application/json"})
    assert count("v1/rerank", "OK") == before[("v1/rerank", "OK")] + 1
    assert count("tei", "INVALID_ARGUMENT") == before[("tei", "INVALID_ARGUMENT")] + 2


def test_a_large_body_is_ranked_and_echoed_like_a_small_one(http, client, rng):
    """Over INLINE_BYTES the gateway reads the JSON body and writes the answer a slice at a time (large_messages.py):
    Cohere's object answer and TEI's bare array, the same ranking as reranker.v1 and the documents echoed."""
    documents = [passage(rng, 80) for _ in range(130)]
    ranking = [(r.index, r.score) for r in client.rerank(QUERIES[0], documents)]
    v2 = http.post("/v2/rerank", json={"model": MODEL, "query": QUERIES[0], "documents": documents, "return_documents": True},
                   timeout=300)
    tei = http.post("/rerank", json={"query": QUERIES[0], "texts": documents, "return_text": True}, timeout=300)
    assert len(v2.request.content) > INLINE_BYTES and len(tei.request.content) > INLINE_BYTES
    for response in (v2, tei):
        assert response.status_code == 200, response.text[:300]
        assert response.headers["content-type"] == "application/json; charset=utf-8"
    results = v2.json()["results"]
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in results], ranking)
    assert all(r["document"] == {"text": documents[r["index"]]} for r in results)
    assert_same_ranking([(r["index"], r["score"]) for r in tei.json()], ranking)
    assert all(r["text"] == documents[r["index"]] for r in tei.json())
