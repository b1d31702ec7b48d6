"""``make run``'s tritonserver is supervised (launcher/triton_supervisor.py): one that crashes or stops answering is
started again on the same ports while the gateway keeps running, NOT_SERVING meanwhile and SERVING after.

The first two tests use real processes (the bundled tritonserver with the tiny model under ``TritonSupervisor``, as
``run.py`` runs it, and a real gateway); the last two a stand-in server, to check the backoff and the bounds quickly.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from ara_reranker_client import RerankerClient
from ara_reranker_server.launcher.child_process import wait_until
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer, free_port
from ara_reranker_server.launcher.triton_supervisor import SupervisionPolicy, TritonSupervisor
from tests.helpers import rerank_until_served
from tools.arabic_text import QUERIES

DOCUMENTS = ["الرياض عاصمة المملكة العربية السعودية.", "القاهرة عاصمة مصر.", "الشاي الأخضر غني بمضادات الأكسدة."]
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
# A restart is a whole tritonserver start (the model loaded again): generous, for a loaded 2-core machine.
BACK_WITHIN_S = 240.0
# A liveness check quicker than the default (every 20 s), with room for a loaded machine: 3 s to answer, 3 misses.
QUICK_LIVENESS = SupervisionPolicy(liveness_period_s=1.0, liveness_timeout_s=3.0, liveness_failures=3)


@pytest.fixture(scope="module")
def supervised(tiny_model_dir, tmp_path_factory):
    """A supervised tritonserver and a gateway in front of it, as make run starts them."""
    logs = tmp_path_factory.mktemp("supervised")
    with TritonServer(TritonOptions(model_dir=tiny_model_dir, log_path=logs / "tritonserver.log")) as triton, \
            TritonSupervisor(triton, QUICK_LIVENESS) as supervisor:
        args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir), "health_interval_s": "0.5"}
        with GatewayProcess(args, log_path=logs / "gateway.log") as gateway:
            yield SimpleNamespace(triton=triton, supervisor=supervisor, gateway=gateway)


def serving_again(stack, reference) -> Counter:
    """Rerank until a call succeeds (bounded); the scores must be the model's. The failed calls' codes."""
    with RerankerClient(stack.gateway.target, timeout=10, retry=None) as client:
        results, codes, _ = rerank_until_served(client, QUERIES[0], DOCUMENTS, BACK_WITHIN_S,
                                                detail=lambda: stack.gateway.log_tail() + stack.triton.log_tail())
    logits = [r.logit for r in sorted(results, key=lambda r: r.index)]
    np.testing.assert_allclose(logits, reference.logits(QUERIES[0], DOCUMENTS), atol=1e-4, rtol=0)
    return codes


def recorded(stack, before: int) -> None:
    """Wait (bounded) for the supervisor to record the restart: it does once its own readiness poll sees the new
    Triton ready, which may come after the gateway's has and the call went through."""
    wait_until(lambda: len(stack.supervisor.restarts) > before, 30, "the supervisor recording the restart")


def test_a_crashed_tritonserver_is_started_again_on_its_ports_and_the_gateway_serves_again(supervised, reference):
    """SIGKILL tritonserver (what a crash or the OOM killer does): the gateway stays up, says NOT_SERVING, answers
    UNAVAILABLE (never INTERNAL); the supervisor starts Triton again on the same ports; the gateway serves again."""
    stack, before = supervised, len(supervised.supervisor.restarts)
    serving_again(stack, reference)
    pid, port = stack.triton.process.pid, stack.triton.options.grpc_port
    os.kill(pid, signal.SIGKILL)
    stack.gateway.wait_status(NOT_SERVING, timeout_s=30)
    codes = serving_again(stack, reference)
    assert set(codes) <= {"UNAVAILABLE"}, codes
    recorded(stack, before)
    assert stack.supervisor.restarts[before:] == ["exited with -9"], stack.supervisor.restarts
    assert stack.triton.process.pid != pid and stack.triton.options.grpc_port == port
    stack.gateway.wait_status(SERVING, timeout_s=30)
    assert stack.gateway.process.poll() is None and stack.supervisor.gave_up is None


def test_a_tritonserver_that_stops_answering_is_restarted_by_the_liveness_check(supervised, reference):
    """SIGSTOP tritonserver and leave it stopped: the liveness inference goes unanswered, and after three misses in a
    row the supervisor replaces it (SIGTERM, then SIGKILL of its group); the gateway serves again."""
    stack, before = supervised, len(supervised.supervisor.restarts)
    serving_again(stack, reference)
    os.kill(stack.triton.process.pid, signal.SIGSTOP)
    codes = serving_again(stack, reference)
    assert set(codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, codes
    recorded(stack, before)
    assert [reason.split(" (")[0] for reason in stack.supervisor.restarts[before:]] == \
        ["failed its liveness check 3 times in a row"], stack.supervisor.restarts
    stack.gateway.wait_status(SERVING, timeout_s=30)


class StandIn:
    """What the supervisor uses of a TritonServer, with no process: ``exits`` says whether each launch dies at once."""

    def __init__(self, exits: bool, http_port: int = 0) -> None:
        self.exits = exits
        self.launches: list[float] = []
        self.running = True
        self.process = SimpleNamespace(returncode=-9)
        self.options = SimpleNamespace(startup_timeout_s=5.0)
        self.log_path = Path("/nonexistent/tritonserver.log")
        self.http_url = f"127.0.0.1:{http_port}"
        self.model_names = ["ara_reranker"]

    def stop(self, timeout_s: float = 20.0) -> None:
        self.running = False

    def launch(self) -> None:
        self.launches.append(time.monotonic())
        self.running = not self.exits

    def is_ready(self) -> bool:
        return self.running

    def log_tail(self, lines: int = 40) -> str:
        return "(stand-in)"


def test_repeated_failed_starts_back_off_and_then_give_up():
    policy = SupervisionPolicy(poll_s=0.01, backoff_s=(0.05, 0.1), max_failed_starts=5)
    server = StandIn(exits=True)
    server.running = False  # it has just crashed
    with TritonSupervisor(server, policy) as supervisor:
        wait_until(lambda: supervisor.gave_up is not None, 30, "the supervisor giving up")
    gaps = np.diff(server.launches)
    assert len(server.launches) == 5 and supervisor.restarts == []
    assert all(gap >= floor for gap, floor in zip(gaps, (0.05, 0.1, 0.1, 0.1))), gaps  # doubling, up to its bound
    assert "5 starts in a row" in supervisor.gave_up and "exited while starting" in supervisor.gave_up


def test_a_server_failing_its_liveness_check_is_restarted():
    """Nothing listens on the stand-in's port: every liveness inference fails, and the third in a row restarts it."""
    policy = SupervisionPolicy(poll_s=0.01, liveness_period_s=0.05, liveness_timeout_s=1.0, liveness_failures=3)
    server = StandIn(exits=False, http_port=free_port())
    with TritonSupervisor(server, policy) as supervisor:
        wait_until(lambda: supervisor.restarts, 30, "a restart")
    assert supervisor.restarts[0].startswith("failed its liveness check 3 times in a row (ara_reranker: "), supervisor.restarts
    assert len(server.launches) >= 1 and supervisor.gave_up is None
