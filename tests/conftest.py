"""Shared fixtures: the offline tiny model, a real tritonserver and gateway on free loopback ports (and a client of
the gateway), and the in-process reference that every score the service returns must equal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import pytest

from ara_reranker_client import RerankerClient
from ara_reranker_model.store import prepare
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from bench.repository import edited_copy
from tests.reference import InProcessReference, Qwen3RerankerRecipe
from tools.arabic_text import MODEL_CARD_CANDIDATES, long_passage, mixed_passages

# Test gateways run without the score cache unless a test turns it on (tests/test_score_cache.py): many
# tests send a request again on purpose (after killing Triton, to count Triton's executions, ...), and a
# cache answering the repeat would hide what they check. Flags override this (flags > env > default).
os.environ["RERANKER_SCORE_CACHE_MB"] = "0"

Process = TypeVar("Process", GatewayProcess, TritonServer)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """models/tiny: real XLM-R tokenizer, random weights (rankings mean nothing; shapes are real)."""
    return prepare("tiny")


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    """models/qwen3-tiny: a Qwen3-Reranker stand-in, real Qwen3 tokenizer, random weights."""
    return prepare("qwen3-tiny")


@pytest.fixture(scope="session")
def qwen_recipe(qwen_dir: Path) -> Qwen3RerankerRecipe:
    """The Qwen3-Reranker model card's transformers recipe on qwen3-tiny, the whole prompt: the logits an LLM
    reranker must reproduce."""
    return Qwen3RerankerRecipe(qwen_dir)


@pytest.fixture(scope="session")
def qwen_recipe_512(qwen_dir: Path) -> Qwen3RerankerRecipe:
    """The same recipe cutting the whole prompt at 512 tokens (as a gateway with max_input_length 512 does)."""
    return Qwen3RerankerRecipe(qwen_dir, max_length=512)


@pytest.fixture(scope="session")
def llm_documents() -> list[str]:
    """Documents for the LLM rerankers' tests: the model card's candidates, Arabic passages, English, an empty one,
    leading spaces and newlines, and last a long page (~1,000 tokens, cut at 512): rows of very different lengths."""
    rng = np.random.default_rng(37)
    return MODEL_CARD_CANDIDATES + mixed_passages(rng, 10) + [
        "The capital of China is Beijing.", "Gravity is a force that attracts two bodies towards each other.",
        "",  # an empty document: the prompt's frame alone
        " leading space", "\nnewline first", "42"] + [long_passage(rng)]


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
def client(gateway: GatewayProcess) -> Iterator[RerankerClient]:
    """reranker.v1's client (the project's sync RerankerClient) on the session gateway, one channel per module."""
    with RerankerClient(gateway.target, timeout=60) as c:
        yield c


def _started_until_the_end(build: Callable[..., Process]) -> Iterator[Callable[..., Process]]:
    """Yields a factory that builds a process (``build(*args, **kwargs)``), starts it and waits until it serves
    (``start=False``: returns it unstarted), then stops every one it made, last first."""
    made: list[Process] = []

    def make(*args, start: bool = True, **kwargs) -> Process:
        process = build(*args, **kwargs)
        made.append(process)
        if start:
            process.start()
        return process

    yield make
    for process in reversed(made):
        process.stop()


@pytest.fixture(scope="module")
def make_gateway(triton: TritonServer, tiny_model_dir: Path, tmp_path_factory):
    """A factory of gateway processes in front of the session Triton serving the tiny model, for a module's own
    settings: ``make_gateway(api_keys=KEY, max_input_length=512)`` starts one (settings as the gateway's flags take
    them, over these defaults), waits until it serves, and every one it started is stopped when the module ends."""
    def build(**settings: object) -> GatewayProcess:
        args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir)} | {k: str(v) for k, v in settings.items()}
        return GatewayProcess(args, log_path=tmp_path_factory.mktemp("gateway") / "gateway.log")

    yield from _started_until_the_end(build)


@pytest.fixture(scope="module")
def make_triton(tiny_model_dir: Path, tmp_path_factory):
    """A factory of tritonservers serving the tiny model from an edited copy of the model repository, for a module
    whose test changes Triton: ``make_triton(max_queue_size=2)`` (arguments as ``bench.repository.edited_copy`` takes
    them) starts one and waits until it serves; ``start=False`` returns it unstarted, for a test that starts, kills or
    restarts it itself. Every one it made is stopped when the module ends."""
    def build(*edits, **fields) -> TritonServer:
        tmp = tmp_path_factory.mktemp("triton")
        return TritonServer(TritonOptions(model_dir=tiny_model_dir, model_repository=edited_copy(tmp, *edits, **fields),
                                          log_path=tmp / "tritonserver.log"))

    yield from _started_until_the_end(build)


@pytest.fixture(scope="session")
def reference(tiny_model_dir: Path) -> InProcessReference:
    """transformers in-process, one pair at a time: the scores the service must reproduce."""
    return InProcessReference(tiny_model_dir)


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
