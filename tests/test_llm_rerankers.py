"""LLM rerankers (decoder-only, scored at the last position) in the scorer and the real tritonserver.

What callers rely on: for Qwen3-Reranker (here the offline ``qwen3-tiny``: random weights, the real Qwen3 tokenizer),
every logit the service computes equals the model card's transformers recipe (its chat prompt, left padding,
``AutoModelForCausalLM`` ``logits[:, -1, "yes"] - logits[:, -1, "no"]``) within 1e-4, whatever the batching: rows of
very different lengths in one padded batch, micro-batches of one row, several threads, through Triton beside a
cross-encoder; the order of the logits is the order of the card's scores; bad rows get INVALID_ARGUMENT. The gemma
family's rule (logit("Yes") at the last position) is checked on a tiny random ``GemmaForCausalLM`` built here with
the Qwen tokenizer's ids: it proves the scoring rule under padding and batching, not bge-reranker-v2-gemma's
tokenizer or prompt (no wheel ships Gemma's tokenizer). Rankings mean nothing (random weights); the prompt's tokens,
truncation and compute are the real ones.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from ara_reranker_model import engines
from ara_reranker_model.families import GEMMA_RERANKER, QWEN3_RERANKER, family_of
from ara_reranker_model.inputs import padded_rows
from ara_reranker_model.limits import max_input_length
from ara_reranker_model.scoring import Batching, CrossEncoderScorer, RequestRows, scatter
from ara_reranker_model.store import QWEN3_SHAPES, REAL_MODELS, hub_id
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from tools.arabic_text import MODEL_CARD_QUERY, QUERIES

ATOL = 1e-4
SHORT = 512  # qwen_recipe_512 (and a gateway) cutting the whole prompt at 512 tokens
INSTRUCTION = "Given an Arabic question, retrieve Arabic passages that answer it"


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cases(qwen_recipe, qwen_recipe_512, llm_documents) -> list[tuple[list[int], float]]:
    """(the row the gateway sends, the recipe's logit): the default instruction, a per-request one, and the
    prompts cut at SHORT tokens by the recipe's truncation; each group's logits from one left-padded batch."""
    groups = [(qwen_recipe, MODEL_CARD_QUERY, None), (qwen_recipe, QUERIES[0], INSTRUCTION), (qwen_recipe_512, QUERIES[1], None)]
    out = []
    for r, query, instruction in groups:
        logits = r.logits(query, llm_documents, instruction)
        out += [(r.encode(query, d, instruction), float(x)) for d, x in zip(llm_documents, logits)]
    return out


@pytest.fixture(scope="module")
def scorer(qwen_dir: Path):
    s = CrossEncoderScorer.load(qwen_dir, Batching(8192, overhead_tokens=16, workers=2), num_threads=1)
    yield s
    s.close()


def _score(scorer: CrossEncoderScorer, requests: list[list[list[int]]]) -> list[np.ndarray]:
    rows = {k: RequestRows([np.asarray(r, dtype=np.int64) for r in rows]) for k, rows in enumerate(requests)}
    return scatter(scorer.score(rows), [len(r) for r in requests])


# ------------------------------------------------------------------------------------ the stand-in itself
def test_qwen3_stand_ins_have_the_real_tokenizer_and_shapes(qwen_dir: Path, qwen_recipe):
    config = json.loads((qwen_dir / "config.json").read_text())
    assert family_of(config) == QWEN3_RERANKER and config["architectures"] == ["Qwen3ForCausalLM"]
    assert (config["vocab_size"], config["max_position_embeddings"], config["tie_word_embeddings"]) == (151669, 40960, True)
    tokenizer = qwen_recipe.tokenizer
    # Qwen3's ids: the answer tokens, padding, and the think block of the suffix.
    assert (qwen_recipe.token_true_id, qwen_recipe.token_false_id, tokenizer.pad_token_id) == (9693, 2152, 151643)
    assert qwen_recipe.suffix_tokens == [151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]
    assert tokenizer.model_max_length == 131072 and max_input_length(qwen_dir) == 8192
    # Qwen3-Reranker-0.6B's shape (its config.json).
    l28 = QWEN3_SHAPES["qwen3-l28"]
    assert (l28.layers, l28.hidden, l28.heads, l28.kv_heads, l28.head_dim, l28.ffn) == (28, 1024, 16, 8, 128, 3072)
    assert hub_id("qwen3-0.6b") == "Qwen/Qwen3-Reranker-0.6B" and REAL_MODELS["bge-gemma"] == "BAAI/bge-reranker-v2-gemma"


def test_the_recipe_rows_are_real_prompts_and_the_parity_tests_can_fail(cases, qwen_recipe, qwen_recipe_512, llm_documents):
    lengths = sorted(len(row) for row, _ in cases)
    assert lengths[0] < 100 and lengths[-1] > 1000 and lengths.count(SHORT) >= 1  # one cut at SHORT, keeping its suffix
    assert all(row[-9:] == qwen_recipe.suffix_tokens and row[: len(qwen_recipe.prefix_tokens)] == qwen_recipe.prefix_tokens
               for row, _ in cases)
    expected = np.array([x for _, x in cases])
    assert np.ptp(expected) > 0.5  # logits spread: orderings and parity are testable
    # The instruction reaches the logit: the same documents score otherwise under another instruction.
    other = qwen_recipe.logits(QUERIES[0], llm_documents[:4], "Judge nothing")
    assert np.abs(other - qwen_recipe.logits(QUERIES[0], llm_documents[:4], INSTRUCTION)).min() > 100 * ATOL


# ------------------------------------------------------------------------------------------- the scorer
def test_scorer_logits_equal_the_recipe_in_one_padded_batch_and_row_by_row(scorer, cases):
    rows, expected = [row for row, _ in cases], np.array([x for _, x in cases], dtype=np.float32)
    [together] = _score(scorer, [rows])  # micro-batches of rows of very different lengths, right-padded
    np.testing.assert_allclose(together, expected, atol=ATOL, rtol=0)
    alone = np.concatenate(_score(scorer, [[row] for row in rows]))
    np.testing.assert_allclose(alone, expected, atol=ATOL, rtol=0)


def test_padding_never_changes_a_row_s_logit(qwen_dir: Path, cases):
    """One forward pass over every row right-padded to the longest (a short row padded by ~1,000 tokens)."""
    engine = engines.load_engine("torch", qwen_dir, num_threads=1)
    # Only the answer tokens' lm_head rows are kept: nothing computes logits over the 151,669-id vocabulary.
    assert engine.answer_ids == [9693, 2152] and tuple(engine.head_weight.shape) == (2, 64)
    assert not any(getattr(m, "out_features", 0) == 151669 for m in engine.body.modules())
    rows = [row for row, _ in cases]
    ids, mask = padded_rows(rows, engine.config.pad_token_id)
    assert ids.shape[1] - min(map(len, rows)) > 900
    np.testing.assert_allclose(engine.forward(ids, mask), [x for _, x in cases], atol=ATOL, rtol=0)


@pytest.mark.parametrize("budget", [600, 2048])
def test_scorer_logits_equal_the_recipe_whatever_the_micro_batching(qwen_dir: Path, cases, budget):
    s = CrossEncoderScorer.load(qwen_dir, Batching(max(budget, SHORT * 2 + 600), overhead_tokens=0, workers=1), num_threads=1)
    try:
        requests = [[row for row, _ in cases[i::3]] for i in range(3)]  # three requests, mixed lengths each
        got = _score(s, requests)
    finally:
        s.close()
    for i, logits in enumerate(got):
        np.testing.assert_allclose(logits, [x for _, x in cases[i::3]], atol=ATOL, rtol=0)


def test_ranking_is_the_order_of_the_logits_and_the_logit_is_the_card_score(scorer, qwen_recipe, llm_documents):
    logits, card = qwen_recipe.batch_logits(MODEL_CARD_QUERY, llm_documents)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits.astype(np.float64))), card, atol=1e-6)
    [served] = _score(scorer, [[qwen_recipe.encode(MODEL_CARD_QUERY, d) for d in llm_documents]])
    by_card = sorted(range(len(llm_documents)), key=lambda i: (-card[i], i))
    by_served = sorted(range(len(llm_documents)), key=lambda i: (-served[i], i))
    assert by_served == by_card


def test_onnx_engine_refuses_a_causal_lm_naming_the_engine_to_use(qwen_dir: Path):
    with pytest.raises(ValueError, match=r"qwen3-reranker.*engine 'onnx' does not run causal LMs; use engine torch"):
        engines.load_engine("onnx", qwen_dir)


def test_a_tokenizer_without_the_answer_tokens_is_refused(qwen_dir: Path, tmp_path: Path):
    """A model directory whose tokenizer has no "yes" would score with some other logit: refused at load."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
    with pytest.raises(ValueError, match=r"no token 'Yes'.*not a gemma-reranker tokenizer"):
        engines.answer_token_ids(tokenizer, GEMMA_RERANKER, 100)  # "Yes" is id 9454: outside a 100-id vocabulary


# ------------------------------------------------------------------------------------ the gemma rule
@pytest.fixture(scope="module")
def gemma_dir(qwen_dir: Path, tmp_path_factory) -> Path:
    """A tiny random ``GemmaForCausalLM`` with the Qwen tokenizer (its ids only): the gemma family's scoring rule."""
    from transformers import AutoTokenizer, GemmaConfig, GemmaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
    config = GemmaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=8192,
                         initializer_range=0.3, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(7)
    target = tmp_path_factory.mktemp("gemma-rule")
    GemmaForCausalLM(config).eval().save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def test_gemma_rule_is_the_yes_logit_at_the_last_position_whatever_the_padding(gemma_dir: Path, cases):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert family_of(json.loads((gemma_dir / "config.json").read_text())) == GEMMA_RERANKER
    tokenizer = AutoTokenizer.from_pretrained(gemma_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(gemma_dir).eval()
    yes = tokenizer.convert_tokens_to_ids("Yes")
    rows = [row for row, _ in cases if len(row) <= 1024][:12]  # within the gemma recipe's 1024 tokens (+ its prompt)
    inputs = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**inputs, logits_to_keep=1).logits[:, -1, yes].numpy()  # the last position's logits only
    assert np.ptp(expected) > 0.5
    s = CrossEncoderScorer.load(gemma_dir, Batching(2048, workers=1), num_threads=1)
    try:
        assert s.max_length == 1024 + 64  # the recipe's A/B part, then room for its "\n" + instruction prompt
        [together] = _score(s, [rows])
        alone = np.concatenate(_score(s, [[row] for row in rows]))
    finally:
        s.close()
    np.testing.assert_allclose(together, expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(alone, expected, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------- through Triton
@pytest.fixture(scope="module")
def triton(qwen_dir: Path, tiny_model_dir: Path, tmp_path_factory) -> TritonServer:
    """One tritonserver serving qwen3-tiny beside the tiny cross-encoder, from the one model kind."""
    tmp = tmp_path_factory.mktemp("llm-triton")
    models = {"qwen3-tiny": qwen_dir, "tiny": tiny_model_dir}
    with TritonServer(TritonOptions(models=models, log_path=tmp / "triton.log")) as server:
        yield server


async def _infer(client, model: str, rows: list[list[int]], pad: int, width: int | None = None) -> np.ndarray:
    ids, mask = padded_rows(rows, pad, width)
    inputs = []
    for name, array in (("input_ids", ids), ("attention_mask", mask)):
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = await client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput("logits")])
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (len(rows), 1)
    return logits[:, 0]


async def test_triton_serves_the_recipe_s_logits_under_concurrent_mixed_requests(triton, cases, tiny_model_dir):
    """Requests of one, a few and many rows, sent together (the dynamic batcher mixes them into one execute()), plus
    cross-encoder requests to the other model of the same Triton: every logit equals the recipe's."""
    client = aioclient.InferenceServerClient(triton.grpc_url)
    try:
        rows, expected = [row for row, _ in cases], np.array([x for _, x in cases], dtype=np.float32)
        splits = [slice(0, 1), slice(1, 4), slice(4, 20), slice(20, len(rows))]
        tiny_rows = [[0, 100, 200, 2], [0, 5, 2]]
        calls = [_infer(client, "qwen3-tiny", rows[s], 151643) for s in splits]
        calls.append(_infer(client, "tiny", tiny_rows, 1))
        calls.append(_infer(client, "qwen3-tiny", rows[:5], 151643, width=max(map(len, rows)) + 7))  # extra padding
        *qwen, tiny, padded_more = await asyncio.gather(*calls)
        np.testing.assert_allclose(np.concatenate(qwen), expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(padded_more, expected[:5], atol=ATOL, rtol=0)
        assert tiny.shape == (2,) and np.abs(tiny[:, None] - expected[None, :]).min() > 0  # its own model's logits
        # The answer tokens found in the model directory's tokenizer are in Triton's log.
        assert "qwen3-reranker: its logit is logit('yes', id 9693) - logit('no', id 2152)" in triton.log_path.read_text()
    finally:
        await client.close()


@pytest.mark.parametrize("row, message", [
    ([9693] * 8193, "row 0 has 8193 tokens; the model takes at most 8192"),
    ([151669, 1, 2], r"input_ids must lie in \[0, 151669\)"),
])
async def test_triton_refuses_a_bad_row_with_invalid_argument(triton, row, message):
    client = aioclient.InferenceServerClient(triton.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match=message) as error:
            await _infer(client, "qwen3-tiny", [row], 151643)
        assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        await client.close()


# ------------------------------------------------------------------------------------------ evaluation
def test_the_evaluation_s_in_process_row_for_qwen3_ranks_as_the_scorer_does(qwen_dir: Path, scorer, qwen_recipe):
    """``make eval TARGETS=...,local:models/qwen3-tiny``: the in-process row is the card's recipe, batched its own
    way (length-sorted, left-padded), and gives the logits the served model computes."""
    from client.evaluation import SAMPLE_DATA, LocalQwen3Ranker, evaluate, load_dataset, local_ranker

    groups = load_dataset(SAMPLE_DATA)[:3]
    ranker = local_ranker(qwen_dir)
    assert isinstance(ranker, LocalQwen3Ranker) and ranker.recipe.max_length == 8192
    for group in groups:
        served = _score(scorer, [[qwen_recipe.encode(group.query, d) for d in group.documents]])[0]
        np.testing.assert_allclose(ranker(group.query, group.documents), served, atol=ATOL, rtol=0)
    report = evaluate(groups, ranker, name="qwen3-tiny (in-process)", progress=False)
    assert len(report.queries) == 3
