"""The Triton configurations and the limits that must agree with the gateway's.

config.pbtxt (GPU) and configs/cpu.pbtxt (CPU) are two whole files that Triton reads one of; they must
differ only in the fields server.triton_config.CPU_DIFFERENCES lists (with the reason docs/configuration.md
shows). The shipped defaults must keep every rule of server.model_limits.COUPLED_LIMITS."""

from __future__ import annotations

import pytest
import tritonclient.grpc.model_config_pb2 as model_config_pb2
from google.protobuf import json_format, text_format

from server import triton_config
from server.model_limits import COUPLED_LIMITS, coupled_limit_problems
from server.settings import Settings
from tools.model_store import REAL_MODEL_MAX_LENGTH

CONFIGS = {name: triton_config.read(path) for name, path in triton_config.CONFIGS.items()}


@pytest.mark.parametrize("name", sorted(triton_config.CONFIGS))
def test_the_reader_sees_what_triton_sees(name):
    """The small text-format reader agrees with protobuf's own parser on Triton's ModelConfig schema."""
    path = triton_config.CONFIGS[name]
    message = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    theirs = triton_config.fields(json_format.MessageToDict(message, preserving_proto_field_name=True))
    ours = triton_config.fields(CONFIGS[name])
    assert {k: str(v) for k, v in ours.items()} == {k: str(v) for k, v in theirs.items()}


def test_gpu_and_cpu_configs_differ_only_in_the_documented_fields():
    gpu, cpu = triton_config.fields(CONFIGS["gpu"]), triton_config.fields(CONFIGS["cpu"])
    differing = {path for path in gpu.keys() | cpu.keys() if gpu.get(path) != cpu.get(path)}
    listed = set(triton_config.CPU_DIFFERENCES)
    assert differing - listed == set(), "fields that differ without a documented reason (add them to CPU_DIFFERENCES)"
    assert listed - differing == set(), "documented differences that are no longer different (drop them from CPU_DIFFERENCES)"


def test_reader_handles_repeated_fields_lists_and_comments():
    config = triton_config.parse(
        '# comment\nname: "m"  # trailing\ninput { name: "a" dims: [ -1, 4 ] }\ninput { name: "b" }\n'
        'parameters [ { key: "k", value: { string_value: "v \\"q\\"" } } ]\nflag: true\nratio: 0.5\n'
    )
    assert config["name"] == "m" and [i["name"] for i in config["input"]] == ["a", "b"]
    assert config["input"][0]["dims"] == [-1, 4] and config["flag"] is True and config["ratio"] == 0.5
    assert triton_config.parameters(config) == {"k": 'v "q"'}
    with pytest.raises(ValueError, match="missing"):
        triton_config.parse("a { b: 1")


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
