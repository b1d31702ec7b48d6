"""The inference engines behind the Triton model: ONNX Runtime is held to the torch reference.

What users of ``ENGINE=onnx`` rely on: the exported graph gives the same logits as transformers in
fp32 (within 1e-4) for any batch the model hands it, padded or not, short or truncated at 512 tokens,
in-process and through a real tritonserver; the export refuses to install a graph that differs, and
two processes exporting the same model at once leave one valid graph. Weights are the offline tiny
model's (random, from a fixed seed): the values mean nothing as rankings, but tokenization,
truncation and compute are the real ones.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

import ara_reranker_model.engines as engines
import ara_reranker_model.onnx_export as onnx_export
from ara_reranker_model.files import graph_path, onnx_path
from ara_reranker_model.onnx_export import OnnxExportError, export_onnx
from ara_reranker_server import triton_config
from ara_reranker_server.launcher.triton_launcher import (
    MODEL_NAME,
    TritonOptions,
    TritonServer,
    TritonStartError,
)
from ara_reranker_server.triton_scorer import ModelInfo
from bench.repository import edited_copy
from tests.helpers import padded
from tools.arabic_text import MODEL_CARD_CANDIDATES, MODEL_CARD_QUERY, QUERIES, long_passage, mixed_passages, passage

ATOL = 1e-4  # the parity bound every engine is held to (float32 on CPU)
SHORT = 512  # pairs cut here, as a gateway with max_input_length 512 does


def _link_model(source: Path, target: Path) -> Path:
    """A model directory whose files are links to ``source``'s (no onnx/): cheap and isolated."""
    target.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (target / path.name).symlink_to(path)
    return target


@pytest.fixture(scope="module")
def onnx_model_dir(tiny_model_dir: Path) -> Path:
    """models/tiny with its ONNX export (idempotent and locked: made once, reused by later runs)."""
    export_onnx(tiny_model_dir)
    return tiny_model_dir


@pytest.fixture(scope="module")
def torch_engine(tiny_model_dir: Path):
    return engines.load_engine("torch", tiny_model_dir, num_threads=1)


@pytest.fixture(scope="module")
def onnx_engine(onnx_model_dir: Path):
    return engines.load_engine("onnx", onnx_model_dir, num_threads=1)


@pytest.fixture(scope="module")
def arabic_rows(reference, rng) -> list[list[int]]:
    """Token rows of Arabic pairs: mixed lengths, the model card's pairs, ones truncated at 512 (a
    gateway's lowered max_input_length) and one of several thousand tokens."""
    rows = [reference.encode(QUERIES[i % len(QUERIES)], d) for i, d in enumerate(mixed_passages(rng, 24))]
    rows += [reference.encode(MODEL_CARD_QUERY, d) for d in MODEL_CARD_CANDIDATES]
    rows += [reference.encode(q, long_passage(rng), SHORT) for q in QUERIES[:3]]
    rows += [reference.encode(QUERIES[3], passage(rng, 200))]  # ~3,500 tokens: the real model's long context
    assert sorted(len(r) for r in rows)[-4:-1] == [SHORT] * 3  # the long ones really were truncated
    assert max(len(r) for r in rows) > 3000
    assert min(len(r) for r in rows) < 40
    return rows


def test_onnx_logits_equal_torch_on_padded_mixed_batches(torch_engine, onnx_engine, arabic_rows, reference):
    # One padded batch of everything, unsorted: short rows padded far beyond their length.
    ids, mask = padded(arabic_rows)
    expected = reference.logits_of_ids(arabic_rows)
    np.testing.assert_allclose(torch_engine.forward(ids, mask), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(onnx_engine.forward(ids, mask), expected, atol=ATOL, rtol=0)
    # Length-sorted micro-batches as model.py cuts them, plus extra padding columns beyond the longest row.
    order = sorted(range(len(arabic_rows)), key=lambda i: -len(arabic_rows[i]))
    for start in range(0, len(order), 8):
        batch = [arabic_rows[i] for i in order[start : start + 8]]
        ids, mask = padded(batch, width=len(batch[0]) + 7)
        np.testing.assert_allclose(onnx_engine.forward(ids, mask), torch_engine.forward(ids, mask), atol=ATOL, rtol=0)


def test_onnx_logits_equal_torch_row_by_row(onnx_engine, arabic_rows, reference):
    # A batch of one row with no padding at all: the reference's own shape, lengths 1-row up to 512.
    for row in arabic_rows[::4] + arabic_rows[-3:]:
        ids, mask = padded([row])
        np.testing.assert_allclose(onnx_engine.forward(ids, mask), reference.logits_of_ids([row]), atol=ATOL, rtol=0)


def test_onnx_engine_returns_float32_rows(onnx_engine, arabic_rows):
    ids, mask = padded(arabic_rows[:5])
    logits = onnx_engine.forward(ids, mask)
    assert logits.dtype == np.float32 and logits.shape == (5,)


def test_onnx_engine_without_export_names_the_fix(onnx_model_dir: Path, tmp_path: Path):
    bare = _link_model(onnx_model_dir, tmp_path / "bare")
    with pytest.raises(ValueError, match="ENGINE=onnx"):
        engines.load_engine("onnx", bare)
    with pytest.raises(ValueError, match="float32"):
        engines.load_engine("onnx", onnx_model_dir, dtype="float16")


def _export_in_process(model_dir: str) -> str:
    return str(export_onnx(Path(model_dir)))


def test_concurrent_exports_leave_one_verified_graph_and_bad_graphs_are_refused(tiny_model_dir, tmp_path, monkeypatch):
    model_dir = _link_model(tiny_model_dir, tmp_path / "tiny")
    # Two processes at once (as two `make model` or a test run next to a deploy would): the lock
    # serialises them, the second finds the first's export and keeps it.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_export_in_process, [str(model_dir)] * 2)
    target = onnx_path(model_dir)
    assert paths == [str(target)] * 2
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".export-")] == []
    good = target.read_bytes()
    engine = engines.load_engine("onnx", model_dir, num_threads=1)
    ids, mask = padded([[0, 6, 7, 2, 2, 8, 9, 2], [0, 6, 2, 2, 8, 2]])
    expected = engines.load_engine("torch", model_dir).forward(ids, mask)
    np.testing.assert_allclose(engine.forward(ids, mask), expected, atol=ATOL, rtol=0)
    # A graph that differs from torch beyond the bound is refused loudly and not installed.
    monkeypatch.setattr(onnx_export, "PARITY_ATOL", 0.0)
    with pytest.raises(OnnxExportError, match="differs from torch"):
        export_onnx(model_dir, force=True)
    assert target.read_bytes() == good


def test_triton_serves_onnx_logits_equal_to_the_reference(onnx_model_dir: Path, reference, arabic_rows, tmp_path: Path):
    rows = arabic_rows[:10] + arabic_rows[-2:]
    ids, mask = padded(rows)
    options = TritonOptions(model_dir=onnx_model_dir, engine="onnx", log_path=tmp_path / "tritonserver.log")
    with TritonServer(options) as triton:
        with grpcclient.InferenceServerClient(triton.grpc_url) as client:
            inputs = []
            for name, array in (("input_ids", ids), ("attention_mask", mask)):
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            result = client.infer(MODEL_NAME, inputs, outputs=[grpcclient.InferRequestedOutput("logits")])
            # What the gateway's Info reports is read from this config: it names the engine that runs.
            served = ModelInfo.of_config(client.get_model_config(MODEL_NAME, as_json=True)["config"])
    assert (served.engine, served.dtype) == ("onnx", "float32")
    logits = result.as_numpy("logits")
    assert logits.shape == (len(rows), 1) and logits.dtype == np.float32
    np.testing.assert_allclose(logits[:, 0], reference.logits_of_ids(rows), atol=ATOL, rtol=0)


def test_triton_with_onnx_engine_refuses_to_start_without_an_export(tiny_model_dir: Path, tmp_path: Path):
    # Proves the launcher's engine choice reaches model.py: the torch engine would start on this directory.
    bare = _link_model(tiny_model_dir, tmp_path / "bare")
    options = TritonOptions(model_dir=bare, engine="onnx", log_path=tmp_path / "tritonserver.log")
    with pytest.raises(TritonStartError, match="model.onnx not found"):
        with TritonServer(options):
            pass


# ------------------------------------------------------------------------------- low precision, opt-in
# What users of dtype=bfloat16 / int8 / float16 rely on: each loads on the device it is for, its logits stay
# within a stated distance of float32's, and its rankings mostly agree with float32's (measured, not assumed:
# bench/precision.py does the same on the evaluation set). The tiny model's wide random weights (logits
# spread ~1.5) make these bounds looser than the real model's would be; they catch a broken conversion
# (a wrong graph, a dtype not applied, float16 overflow), not a slightly worse rounding.
#   option: (max |logit - fp32|, mean |logit - fp32|, least mean Kendall tau, least mean top-10 agreement)
LOW_PRECISION = {
    ("torch", "bfloat16"): (0.6, 0.12, 0.85, 0.8),
    ("onnx", "int8"): (2.0, 0.5, 0.7, 0.7),
    ("torch", "float16"): (0.1, 0.02, 0.95, 0.9),
    ("onnx", "float16"): (0.1, 0.02, 0.95, 0.9),
}


@pytest.fixture(scope="module")
def drift_lists(reference) -> list[list[list[int]]]:
    """Four queries' candidate lists of 16 Arabic passages (mixed lengths, two cut at 512 tokens), as
    token rows; a fixed seed of their own, so the bounds above see the same rows whatever ran before."""
    rng = np.random.default_rng(15)
    lists = []
    for query in QUERIES[:4]:
        documents = mixed_passages(rng, 14) + [long_passage(rng) for _ in range(2)]
        lists.append([reference.encode(query, d, SHORT) for d in documents])
    return lists


def _list_logits(engine, lists: list[list[list[int]]]) -> list[np.ndarray]:
    out = []
    for rows in lists:
        ids, mask = padded(rows)
        out.append(engine.forward(ids, mask))
    return out


@pytest.mark.parametrize("option", list(LOW_PRECISION), ids=lambda o: f"{o[0]}-{o[1]}")
def test_low_precision_options_stay_near_float32_and_agree_on_rankings(option, onnx_model_dir, torch_engine, drift_lists):
    from bench.precision import kendall_tau, top_k_agreement

    engine_name, dtype = option
    max_error, mean_error, least_tau, least_top10 = LOW_PRECISION[option]
    if engine_name == "onnx":
        assert export_onnx(onnx_model_dir, dtype=dtype) == graph_path(onnx_model_dir, dtype)
    # float16 is a GPU precision: run here only as the drift benchmark's CPU estimate (see the refusal test).
    extra = {"allow_cpu_float16": True} if dtype == "float16" else {}
    engine = engines.load_engine(engine_name, onnx_model_dir, num_threads=1, dtype=dtype, **extra)
    expected, actual = _list_logits(torch_engine, drift_lists), _list_logits(engine, drift_lists)
    assert all(a.dtype == np.float32 and a.shape == e.shape for a, e in zip(actual, expected))
    errors = np.abs(np.concatenate(actual) - np.concatenate(expected))
    taus = [kendall_tau(e, a) for e, a in zip(expected, actual)]
    agreement = [top_k_agreement(e, a, 10) for e, a in zip(expected, actual)]
    assert 0 < errors.max() <= max_error, "no error at all: was the option applied?"
    assert errors.mean() <= mean_error
    assert np.mean(taus) >= least_tau and np.mean(agreement) >= least_top10


def test_impossible_precision_choices_are_refused_naming_the_alternative(onnx_model_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="float16 runs on GPU .* use float32 or bfloat16"):
        engines.load_engine("torch", onnx_model_dir, dtype="float16")
    with pytest.raises(ValueError, match="float16 runs on GPU .* use float32 or int8"):
        engines.load_engine("onnx", onnx_model_dir, dtype="fp16")
    with pytest.raises(ValueError, match="int8 .* runs on CPU only"):
        engines.load_engine("onnx", onnx_model_dir, device="cuda", dtype="int8")
    with pytest.raises(ValueError, match="offers dtype"):
        engines.load_engine("onnx", onnx_model_dir, dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype must be"):
        engines.load_engine("torch", onnx_model_dir, dtype="int8")
    # A graph not yet derived: the message says how to make it.
    bare = _link_model(onnx_model_dir, tmp_path / "bare")
    (bare / "onnx").mkdir()
    (bare / "onnx" / "model.onnx").symlink_to(onnx_model_dir / "onnx" / "model.onnx")
    with pytest.raises(ValueError, match="ENGINE=onnx DTYPE=int8"):
        engines.load_engine("onnx", bare, dtype="int8")


def test_derived_graphs_record_their_drift_and_are_kept_while_current(onnx_model_dir: Path):
    import json

    path = export_onnx(onnx_model_dir, dtype="int8")
    manifest = json.loads((path.parent / "export.int8.json").read_text())
    assert 0 < manifest["max_abs_diff_vs_torch_float32"] < 10
    assert manifest["source"]["float32"] == json.loads((path.parent / "export.json").read_text())["source"]
    stamp = path.stat().st_mtime_ns
    assert export_onnx(onnx_model_dir, dtype="int8") == path and path.stat().st_mtime_ns == stamp


def test_triton_serves_the_int8_graph_when_its_config_says_dtype_int8(onnx_model_dir: Path, tmp_path: Path, drift_lists, torch_engine):
    # The dtype is chosen the way engine and dtype always were: the model config's parameters.
    assert triton_config.load(triton_config.CONFIGS["cpu"]).parameters["dtype"].string_value == "auto"
    repository = edited_copy(tmp_path, {"parameters.dtype": "int8"})
    export_onnx(onnx_model_dir, dtype="int8")
    int8_engine = engines.load_engine("onnx", onnx_model_dir, dtype="int8", num_threads=1)
    options = TritonOptions(model_dir=onnx_model_dir, engine="onnx", model_repository=repository, log_path=tmp_path / "tritonserver.log")
    with TritonServer(options) as triton, grpcclient.InferenceServerClient(triton.grpc_url) as client:
        # One row per request, one request at a time: int8 dynamic quantization scales activations per
        # tensor, over the whole micro-batch (padding included), so only a row alone has one true score.
        for row in drift_lists[0][:4]:
            ids, mask = padded([row])
            inputs = []
            for name, array in (("input_ids", ids), ("attention_mask", mask)):
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            logits = client.infer(MODEL_NAME, inputs, outputs=[grpcclient.InferRequestedOutput("logits")]).as_numpy("logits")
            np.testing.assert_allclose(logits[:, 0], int8_engine.forward(ids, mask), atol=ATOL, rtol=0)
            assert abs(logits[0, 0] - torch_engine.forward(ids, mask)[0]) > ATOL  # int8 really was applied


@pytest.mark.gpu  # `make test-gpu` on a GPU node; deselected by `make test`
@pytest.mark.parametrize("engine_name", ["torch", "onnx"])
def test_float16_on_gpu_stays_near_float32(engine_name, onnx_model_dir, torch_engine, drift_lists):
    import onnxruntime

    assert torch.cuda.is_available(), "the gpu tests need a CUDA GPU (make test-gpu on a GPU node)"
    if engine_name == "onnx":
        assert "CUDAExecutionProvider" in onnxruntime.get_available_providers(), "install onnxruntime-gpu for the onnx engine"
    max_error, mean_error, *_ = LOW_PRECISION[(engine_name, "float16")]
    if engine_name == "onnx":
        export_onnx(onnx_model_dir, dtype="float16")
    engine = engines.load_engine(engine_name, onnx_model_dir, device="cuda", dtype="float16")
    errors = np.abs(np.concatenate(_list_logits(engine, drift_lists)) - np.concatenate(_list_logits(torch_engine, drift_lists)))
    assert errors.max() <= max_error and errors.mean() <= mean_error
