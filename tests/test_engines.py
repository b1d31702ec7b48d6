"""The inference engines behind the Triton model: ONNX Runtime is held to the torch reference.

What users of ``ENGINE=onnx`` rely on: the exported graph gives the same logits as transformers in
fp32 (within 1e-4) for any batch the model hands it, padded or not, short or truncated at 512 tokens,
in-process and through a real tritonserver; the export refuses to install a graph that differs, and
two processes exporting the same model at once leave one valid graph. Weights are the offline tiny
model's (random, from a fixed seed): the values mean nothing as rankings, but tokenization,
truncation and compute are the real ones.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import tools.onnx_export as onnx_export
from server.model_files import onnx_path
from tests.arabic_text import MODEL_CARD_CANDIDATES, MODEL_CARD_QUERY, QUERIES, long_passage, mixed_passages, passage
from tests.helpers import padded
from tools.onnx_export import OnnxExportError, export_onnx
from tools.triton_launcher import MODEL_NAME, MODEL_REPOSITORY, TritonOptions, TritonServer, TritonStartError

ATOL = 1e-4  # the parity bound every engine is held to (float32 on CPU)
SHORT = 512  # pairs cut here, as a gateway with max_input_length 512 does


def _load_engines_module() -> ModuleType:
    """engines.py as Triton's stub imports it: from the model version directory, not a package."""
    path = MODEL_REPOSITORY / MODEL_NAME / "1" / "engines.py"
    spec = importlib.util.spec_from_file_location("ara_reranker_engines", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


engines = _load_engines_module()


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
