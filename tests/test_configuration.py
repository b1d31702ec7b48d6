"""The Triton configurations and the limits that must agree with the gateway's.

Pure: no process is started (``make test-unit``).

config.pbtxt (GPU) and configs/cpu.pbtxt (CPU) are two whole files that Triton reads one of; they must
differ only in the fields ara_reranker_server.triton_config.CPU_DIFFERENCES lists (with the reason docs/configuration.md
shows). The shipped defaults must keep every rule of ara_reranker_model.limits.COUPLED_LIMITS."""

from __future__ import annotations

import pytest

from ara_reranker_model.limits import COUPLED_LIMITS, coupled_limit_problems
from ara_reranker_model.store import REAL_MODEL_MAX_LENGTH
from ara_reranker_server import triton_config
from ara_reranker_server.settings import Settings

pytestmark = pytest.mark.unit  # starts no process: make test-unit

CONFIGS = {name: triton_config.read(path) for name, path in triton_config.CONFIGS.items()}


def test_gpu_and_cpu_configs_differ_only_in_the_documented_fields():
    gpu, cpu = triton_config.fields(CONFIGS["gpu"]), triton_config.fields(CONFIGS["cpu"])
    differing = {path for path in gpu.keys() | cpu.keys() if gpu.get(path) != cpu.get(path)}
    listed = set(triton_config.CPU_DIFFERENCES)
    assert differing - listed == set(), "fields that differ without a documented reason (add them to CPU_DIFFERENCES)"
    assert listed - differing == set(), "documented differences that are no longer different (drop them from CPU_DIFFERENCES)"


@pytest.mark.parametrize("name", sorted(triton_config.CONFIGS))
def test_both_configs_batch_dynamically(name):
    """The CPU config's queue delay is 0, which the text format and its JSON leave out: the dynamic batcher itself
    must still be there (without it Triton runs every request on its own)."""
    config = triton_config.load(triton_config.CONFIGS[name])
    assert config.HasField("dynamic_batching")
    if name == "cpu":  # requests batch by queueing behind a busy instance; a wait would only delay a lone one
        assert config.dynamic_batching.max_queue_delay_microseconds == 0


def test_a_field_triton_does_not_know_is_refused_naming_the_file(tmp_path):
    """Configs are parsed against Triton's own ModelConfig schema: a misspelt field fails here as it does in Triton."""
    bad = tmp_path / "config.pbtxt"
    bad.write_text(triton_config.CONFIGS["cpu"].read_text().replace("max_batch_size:", "max_batchsize:", 1))
    with pytest.raises(ValueError, match=r"config\.pbtxt.*max_batchsize"):
        triton_config.read(bad)


def test_a_written_config_reads_back_the_same(tmp_path):
    config = triton_config.load(triton_config.CONFIGS["gpu"])
    (tmp_path / "config.pbtxt").write_text(triton_config.dump(config))
    assert triton_config.read(tmp_path / "config.pbtxt") == CONFIGS["gpu"]
    assert triton_config.parameters(CONFIGS["gpu"])["engine"] == "torch"


@pytest.mark.parametrize("name", sorted(triton_config.CONFIGS))
def test_default_gateway_settings_agree_with_each_triton_config(name):
    settings = Settings()
    values = vars(triton_config.limits(CONFIGS[name])) | {
        "chunk_size": settings.chunk_size, "max_documents": settings.max_documents,
        "max_inflight_pairs": settings.max_inflight_pairs, "max_input_length": REAL_MODEL_MAX_LENGTH,
    }
    assert coupled_limit_problems(values) == []
    assert all(set(limit.limits) <= set(values) for limit in COUPLED_LIMITS), "a rule this test does not exercise"


def test_a_broken_rule_is_named_with_its_values_and_unknown_limits_are_skipped():
    problems = coupled_limit_problems({"chunk_size": 300, "max_batch_size": 256})
    assert len(problems) == 1 and "chunk_size=300, max_batch_size=256" in problems[0] and "max_batch_size" in problems[0]
    assert coupled_limit_problems({"chunk_size": 300}) == []  # max_batch_size unknown here: nothing to check
    assert coupled_limit_problems({"chunk_size": 32, "max_inflight_pairs": 8192, "max_queue_size": 0}) == []  # unbounded queue
    with pytest.raises(ValueError, match="max_inflight_pairs >= max_documents"):
        Settings(max_documents=100, max_inflight_pairs=10)
