"""Unit tests of one layer each: the max-input-length rule (server/ara_reranker_model/limits.py), the settings
checked at start, the shared admission bounds, and how Triton endpoint health is tracked
(server/ara_reranker_server/triton_scorer.py, over endpoint_health.py) — no Triton needed."""

from __future__ import annotations

import json
import shutil

import pytest

from ara_reranker_model.limits import ModelLimitError, max_input_length, max_positions
from ara_reranker_server.admission import Admission
from ara_reranker_server.errors import Overloaded, StartupError
from ara_reranker_server.models import load_tokenizer
from ara_reranker_server.settings import Settings
from ara_reranker_server.triton_scorer import ModelInfo, TritonScorer
from tests.helpers import wait_for_async

pytestmark = pytest.mark.unit  # starts no process: make test-unit


def model_dir_with(tmp_path, tiny_model_dir, **tokenizer_config):
    target = tmp_path / "model"
    target.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, target / name)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.update(tokenizer_config)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    return target


def test_info_reports_the_precision_each_engine_runs_for_its_dtype():
    def info(engine: str, dtype: str, kind: str) -> ModelInfo:
        return ModelInfo.of_config({"max_batch_size": 8, "instance_group": [{"kind": kind, "count": 1}],
                                    "parameters": {"engine": {"string_value": engine}, "dtype": {"string_value": dtype}}})

    assert info("torch", "auto", "KIND_GPU") == ModelInfo(8, "float16", "torch")
    assert info("torch", "auto", "KIND_CPU") == ModelInfo(8, "float32", "torch")
    # The onnx engine runs its float32 graph unless a dtype names another, on GPU too.
    assert info("onnx", "auto", "KIND_GPU") == ModelInfo(8, "float32", "onnx")
    # Spellings are reported as the precision they name.
    assert info("torch", "bf16", "KIND_CPU").dtype == "bfloat16"
    assert info("onnx", "qint8", "KIND_CPU").dtype == "int8"
    assert info("onnx", "fp16", "KIND_GPU").dtype == "float16"
    # The instances the gateway's dispatch_window_chunks (auto) keeps one of free: every group's count.
    assert info("torch", "auto", "KIND_CPU").instances == 1
    assert ModelInfo.of_config({"instance_group": [{"kind": "KIND_CPU", "count": 2}]}).instances == 2

def test_the_real_models_context_is_8192_tokens(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["max_position_embeddings"] == 8194 and max_positions(config) == 8192
    assert max_input_length(tiny_model_dir) == 8192
    assert max_input_length(tiny_model_dir, 512) == 512
    assert max_positions({"model_type": "bert", "max_position_embeddings": 512}) == 512


def test_a_tokenizer_longer_than_the_positions_is_refused(tmp_path, tiny_model_dir):
    broken = model_dir_with(tmp_path, tiny_model_dir, model_max_length=16384)
    with pytest.raises(ModelLimitError, match="model_max_length=16384 exceeds the 8192 tokens"):
        max_input_length(broken)
    with pytest.raises(StartupError, match="refusing to start"):
        load_tokenizer(str(broken), 0, threads=1)


def test_a_max_input_length_above_the_models_is_refused_at_start(tiny_model_dir):
    with pytest.raises(StartupError, match="max_input_length=9000 exceeds"):
        load_tokenizer(str(tiny_model_dir), 9000, threads=1)
    assert load_tokenizer(str(tiny_model_dir), 0, threads=1).max_length == 8192


@pytest.mark.parametrize("field, value", [
    ("health_interval_s", 0.0), ("health_failures", 0), ("tokenizer_threads", 0), ("default_timeout_s", -1.0),
    ("max_inflight_tokens", 0), ("max_concurrent_rpcs", 0), ("max_input_length", -1), ("models", ("tiny",)),
])
def test_non_positive_intervals_counts_and_malformed_models_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})


def test_admission_is_shared_fairly_between_models():
    """With two models, a flood on one leaves the other a quarter of the bound."""
    pairs = Admission(100, "max_inflight_pairs", "pairs", ("a", "b"))
    assert pairs.cap == 75
    pairs.acquire(70, "a")
    with pytest.raises(Overloaded, match="one model may hold 75"):
        pairs.acquire(10, "a")
    pairs.acquire(25, "b")  # b still gets in
    with pytest.raises(Overloaded, match="max_inflight_pairs=100"):
        pairs.acquire(10, "b")
    pairs.release(70, "a")
    pairs.release(25, "b")
    assert pairs.in_flight == 0 and pairs.held == {"a": 0, "b": 0}
    pairs.acquire(150, "a")  # larger than the bound: admitted alone


async def test_the_scorers_health_is_its_endpoint_health_with_listeners_and_failures_to_down():
    """The policy itself is tests/test_endpoint_health.py's; here, that the scorer passes its settings and listeners on."""
    scorer = TritonScorer(("127.0.0.1:1",), "m", health_interval_s=0.01, failures_to_down=3)
    changes = []
    scorer.on_health_change(lambda url, up: changes.append(up))
    scorer.health.record("127.0.0.1:1", True)
    scorer.health.record("127.0.0.1:1", False)
    scorer.health.record("127.0.0.1:1", False)
    assert scorer.any_healthy and scorer.healthy == {"127.0.0.1:1": True} and changes == [True]
    scorer.health.record("127.0.0.1:1", False)
    assert not scorer.any_healthy and changes == [True, False]
    await scorer.close()


async def test_the_readiness_poll_survives_an_error():
    scorer = TritonScorer(("127.0.0.1:1",), "m", health_interval_s=0.01)
    polls = []

    async def flaky_check():
        polls.append(1)
        if len(polls) == 1:
            raise RuntimeError("transient")

    scorer.check_health = flaky_check
    scorer.start()
    await wait_for_async(lambda: len(polls), lambda count: count >= 3, "three readiness polls, the first having failed", 5.0)
    await scorer.close()


def test_models_are_found_by_name_or_hub_id_and_unknown_ones_are_named():
    from ara_reranker_server.errors import ModelNotFound
    from ara_reranker_server.models import ModelRegistry, ServedModel
    from ara_reranker_server.service_info import ModelDescription

    def served(name, hub=None):
        info = ModelDescription(name=name, model_id=hub or name, triton_model=name, max_input_length=512,
                                is_default=False, token_type_ids=False, aliases=(hub,) if hub else ())
        return ServedModel(name, reranker=None, scorer=None, info=info)

    registry = ModelRegistry([served("ara", "Omartificial-Intelligence-Space/ARA-Reranker-V1"),
                              served("minilm-l6", "cross-encoder/ms-marco-MiniLM-L-6-v2")])
    assert registry.get("").name == "ara"
    assert registry.get("minilm-l6").name == "minilm-l6"
    assert registry.get("cross-encoder/ms-marco-MiniLM-L-6-v2").name == "minilm-l6"
    with pytest.raises(ModelNotFound, match="served models: ara, minilm-l6"):
        registry.get("bge")
