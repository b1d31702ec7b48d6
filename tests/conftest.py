"""Shared fixtures: the offline tiny model, a real tritonserver on free loopback ports, and the
in-process reference that every score the service returns must equal."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from tests.reference import InProcessReference

# Test gateways run without the score cache unless a test turns it on (tests/test_score_cache.py): many
# tests send a request again on purpose (after killing Triton, to count Triton's executions, ...), and a
# cache answering the repeat would hide what they check. Flags override this (flags > env > default).
os.environ["RERANKER_SCORE_CACHE_MB"] = "0"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """models/tiny: real XLM-R tokenizer, random weights (rankings mean nothing; shapes are real)."""
    return prepare("tiny")


@pytest.fixture(scope="session")
def triton(tiny_model_dir: Path, tmp_path_factory) -> TritonServer:
    """One tritonserver (the bundled CPU binary) serving the tiny model for the whole session.

    Tests that kill or restart Triton start their own instead."""
    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with TritonServer(TritonOptions(model_dir=tiny_model_dir, log_path=log)) as server:
        yield server


@pytest.fixture(scope="session")
def gateway(triton: TritonServer, tiny_model_dir: Path, tmp_path_factory) -> GatewayProcess:
    """A real gateway process (free loopback ports) in front of the session Triton.

    Small chunks so that ordinary test requests are split into several concurrent Triton calls."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir), "chunk_size": "8", "model_id": "offline-tiny"}
    with GatewayProcess(args, log_path=log) as process:
        yield process


@pytest.fixture(scope="module")
def make_gateway(triton: TritonServer, tiny_model_dir: Path, tmp_path_factory):
    """A factory of gateway processes in front of the session Triton serving the tiny model, for a module's own
    settings: ``make_gateway(api_keys=KEY, max_input_length=512)`` starts one (settings as the gateway's flags take
    them, over these defaults), waits until it serves, and every one it started is stopped when the module ends."""
    started: list[GatewayProcess] = []

    def make(**settings: object) -> GatewayProcess:
        args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir)} | {k: str(v) for k, v in settings.items()}
        process = GatewayProcess(args, log_path=tmp_path_factory.mktemp("gateway") / "gateway.log")
        started.append(process)
        process.start()
        return process

    yield make
    for process in reversed(started):
        process.stop()


@pytest.fixture(scope="session")
def reference(tiny_model_dir: Path) -> InProcessReference:
    """transformers in-process, one pair at a time: the scores the service must reproduce."""
    return InProcessReference(tiny_model_dir)


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
