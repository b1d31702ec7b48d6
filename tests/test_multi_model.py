"""BERT-style cross-encoders (token type ids) and several rerankers in one tritonserver.

What callers rely on: a BERT model (the ms-marco MiniLM kind, here the offline ``bert-tiny``: random
weights, real bert-base-uncased WordPiece tokenizer) scores through Triton exactly as transformers does
in-process with the tokenizer's token type ids, torch and ONNX alike, pairs truncated at 512 included;
a request to it without ``token_type_ids`` gets an INVALID_ARGUMENT naming them; one Triton serves
``tiny`` (XLM-R) and ``bert-tiny`` side by side as two Triton models, each answering concurrent mixed
traffic with its own logits. Rankings mean nothing (random weights); tokenization, truncation and
compute are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ara_reranker_model import engines
from ara_reranker_model.inputs import PAD_TOKEN_TYPE, padded_rows
from ara_reranker_model.limits import max_input_length
from ara_reranker_model.onnx_export import export_onnx
from ara_reranker_model.store import (
    BERT_SHAPES,
    OFFLINE_MODELS,
    hub_id,
    prepare,
    resolve_model_dir,
    served_name,
    split_models,
)
from ara_reranker_server import triton_config
from ara_reranker_server.launcher.triton_launcher import (
    MODEL_NAME,
    MODEL_REPOSITORY,
    TritonOptions,
    TritonServer,
    generate_repository,
)
from bench.repository import edited_copy
from tests.helpers import triton_client
from tests.reference import InProcessReference
from tools.arabic_text import MODEL_CARD_CANDIDATES, MODEL_CARD_QUERY, QUERIES, long_passage, mixed_passages

ATOL = 1e-4
LIMIT = 512  # bert-tiny's context, like ms-marco MiniLM's: 512 positions, tokenizer model_max_length 512
INVALID = "StatusCode.INVALID_ARGUMENT"
HOLD_US = 2_000_000  # the two-model Triton's batchers hold requests this long: requests sent together batch
ENGLISH = [
    ("what is the capital of france", "Paris is the capital and most populous city of France."),
    ("how do cross encoders rerank passages", "A cross-encoder reads the query and the passage together."),
    ("green tea benefits", "Café culture: naïve drinkers rarely know the déjà vu of matcha's antioxidants."),
]

Encoding = dict[str, list[int]]


# ---------------------------------------------------------------------------------------------- helpers
def padded(encodings: list[Encoding], pad_id: int, width: int | None = None) -> dict[str, np.ndarray]:
    """A request's INT64 tensors, right-padded to ``width`` (default: the longest row) as the gateway pads
    a chunk: input_ids with ``pad_id``, token_type_ids with the padding token type."""
    ids, mask = padded_rows([e["input_ids"] for e in encodings], pad_id, width)
    arrays = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in encodings[0]:
        arrays["token_type_ids"] = padded_rows([e["token_type_ids"] for e in encodings], PAD_TOKEN_TYPE, width)[0]
    return arrays


async def executions(client, model: str) -> tuple[int, int]:
    """(requests completed, execute() calls) of ``model`` so far."""
    stats = (await client.get_inference_statistics(model, as_json=True))["model_stats"][0]
    return int(stats["inference_stats"]["success"].get("count", 0)), int(stats.get("execution_count", 0))


async def executions_since(client, model: str, before: tuple[int, int], requests: int) -> int:
    """execute() calls of ``model`` since ``before``, once ``requests`` more have been recorded (Triton
    records a request as it is released, a moment after its response), waiting at most 30 s (a loaded
    machine); it returns as soon as they are."""
    deadline = time.monotonic() + 30
    while True:
        done, calls = await executions(client, model)
        if done - before[0] >= requests:
            return calls - before[1]
        if time.monotonic() > deadline:
            raise AssertionError(f"{model}: {requests} requests not recorded after 30 s")
        await asyncio.sleep(0.1)


async def infer(client, model: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Logits [rows] of one request to ``model`` (InferenceServerException on an error response)."""
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = await client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput("logits")])
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (len(next(iter(arrays.values()))), 1)
    return logits[:, 0]


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bert_dir() -> Path:
    return prepare("bert-tiny")


@pytest.fixture(scope="module")
def bert_reference(bert_dir: Path) -> InProcessReference:
    return InProcessReference(bert_dir)


@pytest.fixture(scope="module")
def bert_pairs(bert_reference) -> list[Encoding]:
    """Encodings of Arabic pairs (the card's data is Arabic; it scored MiniLM on it too) and English
    ones: mixed lengths, the card's example, and passages cut at 512 (document only)."""
    rng = np.random.default_rng(512)
    encode = bert_reference.encoding
    encodings = [encode(MODEL_CARD_QUERY, d) for d in MODEL_CARD_CANDIDATES]
    encodings += [encode(QUERIES[i % len(QUERIES)], d) for i, d in enumerate(mixed_passages(rng, 10, max_sentences=6))]
    encodings += [encode(q, d) for q, d in ENGLISH]
    encodings += [encode(q, long_passage(rng)) for q in QUERIES[:3]]
    return encodings


@pytest.fixture(scope="module")
def bert_expected(bert_reference, bert_pairs) -> np.ndarray:
    return bert_reference.logits_of_encodings(bert_pairs)


@pytest.fixture(scope="module")
def two_models(tiny_model_dir: Path, bert_dir: Path, tmp_path_factory) -> TritonServer:
    """One tritonserver serving tiny (XLM-R) and bert-tiny as two Triton models, from a template whose
    batcher holds requests for HOLD_US, so that requests sent together are deterministically handed to
    one execute() of their model, however loaded the machine (requests sent alone wait that long)."""
    tmp = tmp_path_factory.mktemp("two-models")
    template = edited_copy(tmp, max_queue_delay_microseconds=HOLD_US)
    models = {"tiny": tiny_model_dir, "bert-tiny": bert_dir}
    with TritonServer(TritonOptions(models=models, model_repository=template, log_path=tmp / "triton.log")) as server:
        yield server


@pytest.fixture
async def client(two_models):
    async with triton_client(two_models) as client:
        yield client


# ---------------------------------------------------------------------------------- bert-tiny, the model
def test_bert_pairs_mark_the_document_and_the_types_change_the_logits(bert_reference, bert_pairs, bert_expected):
    """The parity tests below can fail: bert-tiny's logits move by far more than the tolerance when the
    token types are left out (all zeros), so a path that drops them is caught."""
    lengths = sorted(len(e["input_ids"]) for e in bert_pairs)
    assert lengths[-3:] == [LIMIT] * 3 and lengths[0] < 40
    assert all(set(e["token_type_ids"]) == {0, 1} for e in bert_pairs)
    without_types = bert_reference.logits_of_ids([e["input_ids"] for e in bert_pairs])
    assert np.abs(without_types - bert_expected).min() > 100 * ATOL
    assert np.ptp(bert_expected) > 1.0  # logits spread over units: orderings and parity are testable


def test_bert_stand_ins_have_the_minilm_context_and_shapes(bert_dir: Path):
    config = json.loads((bert_dir / "config.json").read_text())
    assert (config["model_type"], config["type_vocab_size"], config["max_position_embeddings"]) == ("bert", 2, 512)
    assert config["vocab_size"] == 30522 and len(config["id2label"]) == 1
    assert max_input_length(bert_dir) == LIMIT
    # ms-marco-MiniLM-L-6-v2's shape (its config.json): 6 x 384, 12 heads, 1536 FFN; L-12: 12 layers.
    assert [(s.layers, s.hidden, s.heads, s.ffn) for s in (BERT_SHAPES["bert-l6"], BERT_SHAPES["bert-l12"])] == [
        (6, 384, 12, 1536), (12, 384, 12, 1536)
    ]


def test_a_bert_stand_in_is_kept_while_current_and_rebuilt_when_stale(bert_dir: Path, tmp_path: Path):
    """prepare() keeps a directory whose marker says it was built by this recipe, and rebuilds one built
    by another (e.g. an older recipe): same seed, so the same weights come back."""
    stale = tmp_path / "bert-tiny"
    stale.mkdir()
    for path in bert_dir.iterdir():
        if path.is_file():
            (stale / path.name).write_bytes(path.read_bytes())
    weights = stale / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert prepare("bert-tiny", root=tmp_path) == stale and weights.stat().st_mtime_ns == mtime
    (stale / "OFFLINE_RANDOM_WEIGHTS.txt").write_text("an older recipe\n")
    assert prepare("bert-tiny", root=tmp_path) == stale
    assert (stale / "OFFLINE_RANDOM_WEIGHTS.txt").read_text() == (bert_dir / "OFFLINE_RANDOM_WEIGHTS.txt").read_text()
    assert weights.read_bytes() == (bert_dir / "model.safetensors").read_bytes()


def test_model_names_and_hub_ids():
    assert hub_id("ara") == "Omartificial-Intelligence-Space/ARA-Reranker-V1"
    assert hub_id("bge") == "BAAI/bge-reranker-v2-m3"
    assert hub_id("minilm-l6") == "cross-encoder/ms-marco-MiniLM-L-6-v2"
    assert hub_id("minilm-l12") == "cross-encoder/ms-marco-MiniLM-L-12-v2"
    assert hub_id("BAAI/bge-reranker-base") == "BAAI/bge-reranker-base"
    assert all(hub_id(name) is None for name in OFFLINE_MODELS)
    assert hub_id("/srv/models/mine") is None
    assert {"tiny", "small", "large", "bert-tiny", "bert-l6", "bert-l12", "qwen3-tiny", "qwen3-l28"} == set(OFFLINE_MODELS)
    assert hub_id("qwen3-8b") == "Qwen/Qwen3-Reranker-8B" and served_name("qwen3-0.6b") == "qwen3-0.6b"
    assert resolve_model_dir("qwen3-0.6b", Path("/m")) == Path("/m/qwen3-reranker-0.6b")
    assert served_name("bert-l6") == "bert-l6" and served_name("BAAI/bge-reranker-base") == "bge-reranker-base"
    assert resolve_model_dir("minilm-l6", Path("/m")) == Path("/m/ms-marco-minilm-l-6-v2")
    assert resolve_model_dir("bert-l12", Path("/m")) == Path("/m/bert-l12")
    assert split_models("tiny, bert-tiny") == ["tiny", "bert-tiny"]
    for bad in ("tiny,,bert-tiny", "tiny,tiny"):
        with pytest.raises(ValueError):
            split_models(bad)


def test_in_process_engines_and_bench_system_equal_the_reference(bert_dir, bert_reference, bert_pairs, bert_expected):
    """torch and ONNX engines on one padded batch (short rows padded to 512) and the bench's in-process
    system on text: all within 1e-4 of transformers with the tokenizer's token types."""
    export_onnx(bert_dir)  # idempotent: kept when already exported from these weights
    arrays = padded(bert_pairs, pad_id=0)
    for name in ("torch", "onnx"):
        engine = engines.load_engine(name, bert_dir, num_threads=1)
        logits = engine.forward(arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"])
        np.testing.assert_allclose(logits, bert_expected, atol=ATOL, rtol=0, err_msg=name)
        with pytest.raises(ValueError, match="token_type_ids"):
            engine.forward(arrays["input_ids"], arrays["attention_mask"])

    from bench.systems import InProcessLimit

    documents = [d for _, d in ENGLISH]
    with InProcessLimit(bert_dir, "torch", threads=1, workers=1) as system:
        scores = system.rerank_direct(ENGLISH[0][0], documents)
    expected = bert_reference.scores(ENGLISH[0][0], documents)
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------- two models, one Triton
def test_each_served_name_is_its_own_triton_model(two_models, tiny_model_dir, bert_dir):
    assert two_models.model_names == ["tiny", "bert-tiny"]
    with grpcclient.InferenceServerClient(two_models.grpc_url) as client:
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert index == {"tiny": "READY", "bert-tiny": "READY"}
        for name, weights in (("tiny", tiny_model_dir), ("bert-tiny", bert_dir)):
            config = client.get_model_config(name).config
            assert config.name == name and config.dynamic_batching.max_queue_delay_microseconds > 0
            assert config.parameters["model_dir"].string_value == str(weights.resolve())
            assert [i.name for i in config.input] == ["input_ids", "attention_mask", "token_type_ids"]
            assert [i.optional for i in config.input] == [False, False, True]


async def test_bert_logits_through_triton_equal_the_reference(client, bert_pairs, bert_expected):
    """All pairs in one request (short rows padded far beyond their length, 512-token ones), with extra
    padding columns, and one row per request."""
    whole = padded(bert_pairs, 0)
    wide = padded(bert_pairs, 0, width=LIMIT + 9)  # padding beyond the model's context is never computed
    whole_logits, wide_logits = await asyncio.gather(infer(client, "bert-tiny", whole), infer(client, "bert-tiny", wide))
    np.testing.assert_allclose(whole_logits, bert_expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(wide_logits, bert_expected, atol=ATOL, rtol=0)
    singles = await asyncio.gather(*(infer(client, "bert-tiny", padded([e], 0)) for e in bert_pairs[:6]))
    np.testing.assert_allclose(np.concatenate(singles), bert_expected[:6], atol=ATOL, rtol=0)


def _bad_token_types(arrays: dict[str, np.ndarray]) -> dict[str, tuple[dict[str, np.ndarray], str]]:
    without = {k: v for k, v in arrays.items() if k != "token_type_ids"}
    beyond = dict(arrays, token_type_ids=arrays["token_type_ids"] * 2)
    negative = dict(arrays, token_type_ids=-arrays["token_type_ids"])
    narrow = dict(arrays, token_type_ids=arrays["token_type_ids"][:, :-1])
    return {
        "absent": (without, r"token_type_ids is required.*type_vocab_size=2"),
        "type 2": (beyond, r"token_type_ids must lie in \[0, 2\), got \[0, 2\]"),
        "negative": (negative, r"token_type_ids must lie in \[0, 2\), got \[-1, 0\]"),
        "other shape": (narrow, r"token_type_ids \[3, \d+\] must have input_ids' shape \[3, \d+\]"),
    }


async def test_bad_or_missing_token_types_are_invalid_argument_and_the_model_goes_on(client, bert_pairs, bert_expected):
    """Bad requests and a good one sent together (one execute()): each bad one gets its own error, the
    good one its logits."""
    good = padded(bert_pairs[:3], 0)
    cases = _bad_token_types(good)
    results = await asyncio.gather(
        *(infer(client, "bert-tiny", arrays) for arrays, _ in cases.values()), infer(client, "bert-tiny", good),
        return_exceptions=True,
    )
    for (case, (_, pattern)), got in zip(cases.items(), results):
        assert isinstance(got, InferenceServerException), f"{case}: no error"
        assert got.status() == INVALID and re.search(pattern, got.message()), (case, got)
    np.testing.assert_allclose(results[-1], bert_expected[:3], atol=ATOL, rtol=0)


async def test_two_models_under_concurrent_mixed_requests_each_give_their_own_logits(
    client, reference, bert_pairs, bert_expected, rng
):
    """Requests to tiny and bert-tiny interleaved and in flight together: each model's batcher hands its own requests to one
    execute() (rows of requests of unlike widths stripped, sorted and re-padded together), and each
    request gets its own model's logits, row for row."""
    tiny_pairs = [reference.encode(QUERIES[i % len(QUERIES)], d) for i, d in enumerate(mixed_passages(rng, 12))]
    tiny_expected = reference.logits_of_ids(tiny_pairs)
    jobs = []  # (model, arrays, expected)
    for k in range(16):
        if k % 2:
            members = [(5 * k + j) % len(bert_pairs) for j in range(1 + k % 5)]
            jobs.append(("bert-tiny", padded([bert_pairs[m] for m in members], 0), bert_expected[members]))
        else:
            members = [(3 * k + j) % len(tiny_pairs) for j in range(1 + k % 4)]
            jobs.append(("tiny", padded([{"input_ids": tiny_pairs[m]} for m in members], 1), tiny_expected[members]))
    before = {model: await executions(client, model) for model in ("tiny", "bert-tiny")}
    results = await asyncio.gather(*(infer(client, model, arrays) for model, arrays, _ in jobs))
    for (model, _, expected), got in zip(jobs, results):
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0, err_msg=model)
    for model in before:
        calls = await executions_since(client, model, before[model], requests=8)
        assert calls == 1, f"{model}: its 8 requests took {calls} execute() calls, not one batch"


async def test_an_xlmr_model_ignores_token_type_ids_of_its_one_type(client, reference, rng):
    """tiny (type_vocab_size 1) scores the same with all-zero token_type_ids as without; a type it does not
    have is refused. (Triton batches only requests with the same inputs: send them to a model always or
    never, as the gateway does, or its batches split.)"""
    rows = [reference.encode(q, d) for q, d in zip(QUERIES, mixed_passages(rng, len(QUERIES)))]
    plain = padded([{"input_ids": row} for row in rows], 1)
    zeros = dict(plain, token_type_ids=np.zeros_like(plain["input_ids"]))
    ones = dict(plain, token_type_ids=np.ones_like(plain["input_ids"]))
    without, with_zeros, with_ones = await asyncio.gather(
        *(infer(client, "tiny", arrays) for arrays in (plain, zeros, ones)), return_exceptions=True
    )
    expected = reference.logits_of_ids(rows)
    np.testing.assert_allclose(without, expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(with_zeros, expected, atol=ATOL, rtol=0)
    assert isinstance(with_ones, InferenceServerException) and "must lie in [0, 1)" in with_ones.message()


def test_the_generated_repository_follows_the_template(tmp_path, tiny_model_dir, bert_dir):
    repository = generate_repository(tmp_path / "repo", {"tiny": tiny_model_dir, "bert-tiny": bert_dir})
    template = MODEL_REPOSITORY / MODEL_NAME
    for name, weights in (("tiny", tiny_model_dir), ("bert-tiny", bert_dir)):
        model = repository / name
        assert (model / "1").is_symlink() and (model / "1").resolve() == (template / "1").resolve()
        for config in ("config.pbtxt", "configs/cpu.pbtxt"):
            # The template's configuration with only the name and the weights directory changed.
            expected = triton_config.load(template / config)
            expected.name = name
            expected.parameters["model_dir"].string_value = str(weights.resolve())
            assert triton_config.load(model / config) == expected != triton_config.load(template / config)


def test_an_engine_choice_is_written_into_the_configs_triton_serves(tmp_path):
    # Info reads the engine from Triton's config of the model: the launcher's choice must be there, not
    # beside it. Without weights named, the template's relative model_dir is made absolute as model.py would.
    repository = generate_repository(tmp_path / "repo", {MODEL_NAME: None}, engine="onnx")
    template = MODEL_REPOSITORY / MODEL_NAME
    for config in ("config.pbtxt", "configs/cpu.pbtxt"):
        expected = triton_config.load(template / config)
        assert expected.parameters["engine"].string_value == "torch"
        expected.parameters["engine"].string_value = "onnx"
        expected.parameters["model_dir"].string_value = str((MODEL_REPOSITORY.parent / "models/ara-reranker-v1").resolve())
        assert triton_config.load(repository / MODEL_NAME / config) == expected


def test_options_name_valid_models_one_way():
    with pytest.raises(ValueError, match="not both"):
        TritonServer(TritonOptions(model_dir=Path("/m/tiny"), models={"tiny": Path("/m/tiny")}))
    for bad in ("org/name", "../up", ""):
        with pytest.raises(ValueError, match="Triton model"):
            TritonServer(TritonOptions(models={bad: Path("/m/tiny")}))
    assert TritonServer(TritonOptions(model_dir=Path("/m/tiny"))).model_names == [MODEL_NAME]


async def test_onnx_engine_through_triton_equals_the_reference(bert_dir, bert_pairs, bert_expected, tmp_path):
    """bert-tiny on the ONNX engine, through the single-model path (model_dir=, "ara_reranker")."""
    export_onnx(bert_dir)
    options = TritonOptions(model_dir=bert_dir, engine="onnx", log_path=tmp_path / "tritonserver.log")
    with TritonServer(options) as triton:
        async with triton_client(triton) as client:
            logits = await infer(client, MODEL_NAME, padded(bert_pairs, 0, width=LIMIT + 9))
    np.testing.assert_allclose(logits, bert_expected, atol=ATOL, rtol=0)
