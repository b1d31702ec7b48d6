"""An LLM reranker end to end: the real gateway and the real tritonserver serving the offline ``qwen3-tiny`` (random
weights, the real Qwen3 tokenizer) beside the ``tiny`` cross-encoder (``--models``).

What callers rely on: every score through every API equals sigmoid of the model card's recipe (its prompt's tokens,
``AutoModelForCausalLM`` in-process, logit("yes") - logit("no") at the last position) within 1e-4, with the default
or a per-request instruction, a truncated document and a document scored window by window; the order is the order of
the logits; an instruction too long for the context, or sent to the cross-encoder, is each API's clear error.
Rankings mean nothing (random weights); the tokens, truncation and compute are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch

from ara_reranker_client import AsyncRerankerClient, RerankerClient, RerankerError
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from ara_reranker_server.models import load_tokenizer
from ara_reranker_server.ranking import sigmoid
from tests.reference import Qwen3RerankerRecipe
from tools.arabic_text import MODEL_CARD_CANDIDATES, MODEL_CARD_QUERY, QUERIES

ATOL = 1e-4
MAX_LENGTH = 512  # the gateway's (and qwen_recipe_512's) max input length: long documents are cut
INSTRUCTION = "Given an Arabic question, retrieve Arabic passages that answer it"
QWEN = "qwen3-tiny"


@pytest.fixture(scope="module")
def stack(qwen_dir: Path, tiny_model_dir: Path, tmp_path_factory):
    """tritonserver serving qwen3-tiny and tiny, and a gateway in front of both (qwen3-tiny the default)."""
    tmp = tmp_path_factory.mktemp("llm-gateway")
    with TritonServer(TritonOptions(models={QWEN: qwen_dir, "tiny": tiny_model_dir}, log_path=tmp / "triton.log")) as triton:
        args = {"triton_endpoints": triton.grpc_url, "models": f"{QWEN}={qwen_dir},tiny={tiny_model_dir}",
                "chunk_size": "4", "max_input_length": str(MAX_LENGTH)}
        with GatewayProcess(args, log_path=tmp / "gateway.log") as gateway:
            yield gateway


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.http_url, timeout=120) as client:
        yield client


def row_logit(recipe: Qwen3RerankerRecipe, ids: list[int]) -> float:
    """The model in-process on one unpadded row: logit("yes") - logit("no") at its last position."""
    with torch.inference_mode():
        last = recipe.model(input_ids=torch.tensor([ids])).logits[0, -1]
    return float(last[recipe.token_true_id] - last[recipe.token_false_id])


def by_index(results, key: str = "score") -> np.ndarray:
    return np.array([r[key] for r in sorted(results, key=lambda r: r["index"])], dtype=np.float64)


def test_the_gateway_builds_qwen_rows_with_the_tokenizers_pad(qwen_dir: Path, qwen_recipe_512):
    tok = load_tokenizer(str(qwen_dir), MAX_LENGTH, threads=1)
    assert tok.pad_id == 151643 and tok.prompt.family == "qwen3-reranker" and tok.max_length == MAX_LENGTH
    (row,), _ = tok.encode(MODEL_CARD_QUERY, [MODEL_CARD_CANDIDATES[0]], truncate=True)
    assert row == qwen_recipe_512.encode(MODEL_CARD_QUERY, MODEL_CARD_CANDIDATES[0])


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_grpc_scores_are_the_recipes_and_ranked_by_logit(stack, qwen_recipe_512, llm_documents, instruction):
    logits = qwen_recipe_512.logits(MODEL_CARD_QUERY, llm_documents, instruction)
    with RerankerClient(stack.target, timeout=120) as client:
        results = client.rerank(MODEL_CARD_QUERY, llm_documents, instruction=instruction)
        raw = client.rerank(MODEL_CARD_QUERY, llm_documents, instruction=instruction, raw_scores=True, model=QWEN)
    got = {r.index: r for r in results}
    np.testing.assert_allclose([got[i].logit for i in range(len(llm_documents))], logits, atol=ATOL, rtol=0)
    np.testing.assert_allclose([got[i].score for i in range(len(llm_documents))], sigmoid(logits), atol=ATOL, rtol=0)
    np.testing.assert_allclose(sorted(r.score for r in raw), sorted(logits), atol=ATOL, rtol=0)
    assert [r.logit for r in results] == sorted((r.logit for r in results), reverse=True)
    assert [r.index for r in results][:3] == list(np.argsort(-logits, kind="stable")[:3])
    # The instruction is part of the prompt: another instruction gives other logits (the test can fail).
    other = qwen_recipe_512.logits(MODEL_CARD_QUERY, llm_documents, "Find passages in a different language")
    assert np.abs(other - logits).max() > 1e-3


async def test_concurrent_requests_with_different_instructions_and_models(stack, qwen_recipe_512, reference, llm_documents):
    """qwen3-tiny calls with two instructions and tiny cross-encoder calls at once: each gets its own scores."""
    import asyncio

    async with AsyncRerankerClient(stack.target, timeout=120) as client:
        calls = [client.rerank(QUERIES[i % 3], llm_documents, instruction=[None, INSTRUCTION][i % 2], raw_scores=True)
                 for i in range(4)]
        calls.append(client.rerank(QUERIES[0], llm_documents[:6], model="tiny", raw_scores=True))
        answers = await asyncio.gather(*calls)
    for i, results in enumerate(answers[:4]):
        expected = qwen_recipe_512.logits(QUERIES[i % 3], llm_documents, [None, INSTRUCTION][i % 2])
        np.testing.assert_allclose(by_index([vars(r) for r in results]), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(by_index([vars(r) for r in answers[4]]), reference.logits(QUERIES[0], llm_documents[:6], MAX_LENGTH),
                               atol=ATOL, rtol=0)


def test_a_truncated_document_keeps_the_prompts_suffix(stack, qwen_recipe_512, llm_documents):
    page = llm_documents[-1]
    assert len(qwen_recipe_512.encode(QUERIES[1], page)) == MAX_LENGTH  # the recipe cuts it too
    with RerankerClient(stack.target, timeout=120) as client:
        (end,) = client.rerank(QUERIES[1], [page], raw_scores=True)
        with pytest.raises(RerankerError) as refused:
            client.rerank(QUERIES[1], [page], truncate=False)
    assert end.logit == pytest.approx(qwen_recipe_512.logits(QUERIES[1], [page])[0], abs=ATOL)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "document 0" in refused.value.details


def test_a_long_document_in_windows_is_ranked_by_its_best_window(stack, qwen_recipe_512, llm_documents):
    """Each window is the whole prompt (prefix, instruction, query) around a part of the document, then the suffix;
    the document's logit is its best window's, computed here by the model on those rows."""
    page, window_tokens, overlap = llm_documents[-1], 300, 40
    full = qwen_recipe_512.encode(QUERIES[2], page, INSTRUCTION)  # not cut: the recipe's prompt at 512 only when it fits
    head = qwen_recipe_512.encode(QUERIES[2], "", INSTRUCTION)
    suffix = qwen_recipe_512.suffix_tokens
    prefix = head[: len(head) - len(suffix) - 1]  # up to "<Document>:"; the document's tokens start with " "
    text = qwen_recipe_512.format_instruction(INSTRUCTION, QUERIES[2], page)
    uncut = qwen_recipe_512.prefix_tokens + qwen_recipe_512.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert uncut[: len(prefix)] == prefix
    document = uncut[len(prefix):]
    room = window_tokens - len(prefix) - len(suffix)
    starts = range(0, max(1, len(document) - overlap), room - overlap)
    rows = [prefix + document[s: s + room] + suffix for s in starts][:10]
    assert len(rows) >= 2 and len(full) == MAX_LENGTH
    logits = [row_logit(qwen_recipe_512, row) for row in rows]
    with RerankerClient(stack.target, timeout=120) as client:
        (result,) = client.rerank(QUERIES[2], [page], split=True, window_tokens=window_tokens,
                                  window_overlap_tokens=overlap, instruction=INSTRUCTION, raw_scores=True)
    best = int(np.argmax(logits))
    assert result.logit == pytest.approx(max(logits), abs=ATOL)
    assert result.best_window.index == best


@pytest.mark.parametrize("path, body, text_of", [
    ("/v2/rerank", {"model": QWEN}, lambda r: r["results"]),
    ("/v1/rerank", {"model": QWEN, "return_documents": False}, lambda r: r["results"]),
    ("/rerank", {"model": QWEN, "texts": None}, lambda r: r),  # TEI
    ("/v1/ranking", {"model": QWEN}, lambda r: r["rankings"]),  # NIM
    ("/score", {"model": QWEN}, lambda r: r["data"]),  # vLLM
])
def test_every_http_api_takes_an_instruction(http, qwen_recipe_512, llm_documents, path, body, text_of):
    docs = llm_documents[:8]
    payload = dict(body)
    if path == "/rerank":
        payload |= {"query": QUERIES[0], "texts": docs}
    elif path == "/v1/ranking":
        payload |= {"query": {"text": QUERIES[0]}, "passages": [{"text": d} for d in docs]}
    elif path == "/score":
        payload |= {"text_1": QUERIES[0], "text_2": docs}
    else:
        payload |= {"query": QUERIES[0], "documents": docs}
    response = http.post(path, json=payload | {"instruction": INSTRUCTION})
    assert response.status_code == 200, response.text
    results = text_of(response.json())
    logits = qwen_recipe_512.logits(QUERIES[0], docs, INSTRUCTION)
    if path == "/v1/ranking":
        np.testing.assert_allclose(by_index(results, "logit"), logits, atol=ATOL, rtol=0)
    else:
        key = {"/rerank": "score", "/score": "score"}.get(path, "relevance_score")
        np.testing.assert_allclose(by_index(results, key), sigmoid(logits), atol=ATOL, rtol=0)


def test_an_instruction_too_long_for_the_context_is_each_apis_clear_error(stack, http):
    long_instruction = "Judge the passage carefully. " * 120  # ~700 tokens: no room in 512
    with RerankerClient(stack.target, timeout=60) as client:
        with pytest.raises(RerankerError) as refused:
            client.rerank("q", ["d"], instruction=long_instruction)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "instruction and query" in refused.value.details
    cohere = http.post("/v2/rerank", json={"model": QWEN, "query": "q", "documents": ["d"], "instruction": long_instruction})
    assert cohere.status_code == 400 and "instruction and query" in cohere.json()["message"], cohere.text
    tei = http.post("/rerank", json={"query": "q", "texts": ["d"], "instruction": long_instruction})
    assert tei.status_code == 422 and tei.json()["error_type"] == "Validation", tei.text
    assert "instruction and query" in tei.json()["error"]


def test_a_cross_encoder_refuses_an_instruction_in_every_api(stack, http, reference, llm_documents):
    with RerankerClient(stack.target, timeout=60) as client:
        with pytest.raises(RerankerError) as refused:
            client.rerank(QUERIES[0], llm_documents[:3], model="tiny", instruction=INSTRUCTION)
        plain = client.rerank(QUERIES[0], llm_documents[:3], model="tiny", instruction="")  # empty: none
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "model tiny takes no instruction" in refused.value.details
    np.testing.assert_allclose(by_index([vars(r) for r in plain]), reference.scores(QUERIES[0], llm_documents[:3], MAX_LENGTH),
                               atol=ATOL, rtol=0)
    cohere = http.post("/v2/rerank", json={"model": "tiny", "query": "q", "documents": ["d"], "instruction": "x"})
    assert cohere.status_code == 400 and "takes no instruction" in cohere.json()["message"], cohere.text
    vllm = http.post("/rerank", json={"model": "tiny", "query": "q", "documents": ["d"], "instruction": "x"})
    assert vllm.status_code == 400 and "takes no instruction" in vllm.text, vllm.text


def test_info_says_which_models_take_an_instruction(stack):
    with RerankerClient(stack.target, timeout=60) as client:
        models = {m.name: m for m in client.info().models}
    assert (models[QWEN].family, models[QWEN].takes_instruction) == ("qwen3-reranker", True)
    assert (models["tiny"].family, models["tiny"].takes_instruction) == ("cross-encoder", False)
    assert models[QWEN].max_input_length == MAX_LENGTH


def test_the_cli_takes_an_instruction(stack, qwen_recipe_512, llm_documents, capsys):
    from ara_reranker_client.cli import main

    docs = llm_documents[:4]
    assert main([QUERIES[0], *docs, "--target", stack.target, "--instruction", INSTRUCTION, "--json", "--raw-scores"]) == 0
    printed = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(by_index(printed), qwen_recipe_512.logits(QUERIES[0], docs, INSTRUCTION), atol=ATOL, rtol=0)
    assert main([QUERIES[0], "d", "--target", stack.target, "--model", "tiny", "--instruction", "x"]) == 1
    assert "takes no instruction" in capsys.readouterr().err
