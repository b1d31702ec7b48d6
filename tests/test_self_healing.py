"""A model process that dies is detected and brought back without a human; clients retry what is retryable.

Real parts only: the bundled tritonserver (explicit model control, as make run starts it), real gateways, the
client with its default retry policy, and the kernel's SIGKILL on the Python-backend stub that holds the model
(what the OOM killer does when a long-document batch outgrows memory).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ara_reranker_client import RerankerClient, RerankerError, RetryPolicy
from ara_reranker_model.probe import probe
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer
from tests.helpers import rerank_until_served, wait_for
from tools.arabic_text import QUERIES

DOCUMENTS = ["الرياض عاصمة المملكة العربية السعودية.", "القاهرة عاصمة مصر.", "الشاي الأخضر غني بمضادات الأكسدة."]
RECOVERY_BOUND_S = 30.0  # the target: a single-replica stack serves again within this after its stub is killed


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        except grpc.RpcError:
            return -1


@pytest.fixture()
def own_triton(tiny_model_dir, tmp_path):
    with TritonServer(TritonOptions(model_dir=tiny_model_dir, log_path=tmp_path / "tritonserver.log")) as server:
        yield server


def test_a_killed_model_process_is_reloaded_and_calls_get_unavailable_meanwhile(own_triton, tiny_model_dir, tmp_path, reference):
    args = {"triton_endpoints": own_triton.grpc_url, "tokenizer": str(tiny_model_dir), "health_interval_s": "0.5"}
    with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway, \
            RerankerClient(gateway.target, timeout=30, retry=None) as client:
        client.rerank(QUERIES[0], DOCUMENTS)
        stubs = own_triton.stub_pids()  # one per model instance: all killed, as an OOM kill of the model's memory may
        for stub in stubs:
            os.kill(stub, signal.SIGKILL)
        statuses = Counter()

        def sample_health() -> None:
            statuses[health(gateway.target)] += 1

        results, codes, recovered = rerank_until_served(client, QUERIES[0], DOCUMENTS, 2 * RECOVERY_BOUND_S, sample_health,
                                                        gateway.log_tail)
        assert recovered <= RECOVERY_BOUND_S, (recovered, codes)
        assert set(codes) <= {"UNAVAILABLE"} and codes, codes  # never INTERNAL; the stub's death was seen
        assert statuses[health_pb2.HealthCheckResponse.NOT_SERVING] > 0, statuses  # health said so meanwhile
        assert health(gateway.target) == health_pb2.HealthCheckResponse.SERVING
        assert own_triton.stub_pids() and not set(stubs) & set(own_triton.stub_pids())  # new stubs hold the model
        logits = [r.logit for r in sorted(results, key=lambda r: r.index)]
        np.testing.assert_allclose(logits, reference.logits(QUERIES[0], DOCUMENTS), atol=1e-4, rtol=0)


def test_without_explicit_model_control_the_endpoint_stays_out_and_says_why(tiny_model_dir, tmp_path):
    """A Triton that cannot reload (model control "none") leaves the model down: every call UNAVAILABLE at once
    (not INTERNAL after seconds), health NOT_SERVING, and the gateway log says what to change. The inference
    liveness check (Kubernetes restarts the container on it) fails, where Triton's own health still says live."""
    options = TritonOptions(model_dir=tiny_model_dir, log_path=tmp_path / "tritonserver.log", model_control="none")
    with TritonServer(options) as triton:
        args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir), "health_interval_s": "0.5"}
        with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway, \
                RerankerClient(gateway.target, timeout=30, retry=None) as client:
            client.rerank(QUERIES[0], DOCUMENTS)
            assert probe(f"http://{triton.http_url}") is None
            for stub in triton.stub_pids():
                os.kill(stub, signal.SIGKILL)
            with pytest.raises(RerankerError) as first:
                client.rerank(QUERIES[0], DOCUMENTS)
            assert first.value.code == grpc.StatusCode.UNAVAILABLE, first.value
            started = time.monotonic()
            with pytest.raises(RerankerError) as later:
                client.rerank(QUERIES[0], DOCUMENTS)
            assert later.value.code == grpc.StatusCode.UNAVAILABLE and time.monotonic() - started < 2.0
            gateway.wait_status(health_pb2.HealthCheckResponse.NOT_SERVING, timeout_s=30)
            assert probe(f"http://{triton.http_url}") is not None and triton.is_ready()  # Triton: "ready"
            wait_for(lambda: gateway.log_tail(200), lambda log: "--model-control-mode=explicit" in log,
                     "the gateway's log naming --model-control-mode=explicit", shown=lambda log: log[-2000:])


def test_the_clients_retry_policy_is_on_by_default_and_checked():
    policy = RetryPolicy()
    assert "UNAVAILABLE" in policy.codes and "RESOURCE_EXHAUSTED" in policy.codes and policy.max_attempts == 5
    for bad in ({"max_attempts": 6}, {"max_attempts": 1}, {"codes": ("NOPE",)}, {"initial_backoff_s": 0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_killing_one_of_two_gateways_under_load_fails_no_call(triton, tiny_model_dir, tmp_path):
    """Two gateways behind one ipv4: target; callers with the default retry policy; one gateway SIGKILLed
    mid-load: every call ends with a result (none lost, none failed)."""
    args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir)}
    with GatewayProcess(dict(args), log_path=tmp_path / "a.log") as a, GatewayProcess(dict(args), log_path=tmp_path / "b.log") as b:
        target = f"ipv4:{a.target},{b.target}"
        outcomes: Counter = Counter()
        stop = threading.Event()
        lock = threading.Lock()

        def caller() -> None:
            with RerankerClient(target, timeout=30) as client:
                while not stop.is_set():
                    try:
                        client.rerank(QUERIES[1], DOCUMENTS)
                        outcome = "OK"
                    except RerankerError as exc:
                        outcome = exc.code.name
                    with lock:
                        outcomes[outcome] += 1

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: outcomes["OK"], lambda ok: ok >= 20, "20 calls answered before the kill", 60, detail=lambda: str(outcomes))
        a.process.kill()  # SIGKILL: no drain, connections reset
        before = outcomes["OK"]
        wait_for(lambda: outcomes["OK"], lambda ok: ok >= before + 40, "40 calls answered after the kill", 60, detail=lambda: str(outcomes))
        stop.set()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert set(outcomes) == {"OK"}, outcomes


def test_a_stopped_model_process_costs_calls_their_deadline_then_the_other_endpoint_takes_the_traffic(tiny_model_dir, tmp_path):
    """Two Tritons as two endpoints; A's stub is SIGSTOPped: calls that reach A end at their deadline at the latest
    (never hang longer), A is taken out of rotation (Triton itself declares a stub that stops answering its health
    checks unhealthy within about a second; a probe that gets no answer does the same), and B takes every call.
    That A serves again once its stub resumes is not asserted: Triton 2.51 keeps such a stub unhealthy, and reloading
    it can crash tritonserver, which only a supervisor brings back (make run's: tests/test_triton_supervisor.py;
    docs/architecture.md#reliability-and-security)."""
    tritons = [TritonServer(TritonOptions(model_dir=tiny_model_dir, log_path=tmp_path / f"triton-{i}.log")) for i in range(2)]
    with tritons[0], tritons[1]:
        args = {"triton_endpoints": f"{tritons[0].grpc_url},{tritons[1].grpc_url}", "tokenizer": str(tiny_model_dir),
                "health_interval_s": "0.5"}
        with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway, \
                RerankerClient(gateway.target, timeout=2, retry=None) as client:
            client.rerank(QUERIES[0], DOCUMENTS)
            stubs = tritons[0].stub_pids()  # every instance of A hangs
            for stub in stubs:
                os.kill(stub, signal.SIGSTOP)
            try:
                codes, slowest = Counter(), 0.0
                ok_in_a_row, deadline = 0, time.monotonic() + 60
                while ok_in_a_row < 10:  # A out of rotation: every call goes to B
                    assert time.monotonic() < deadline, (codes, gateway.log_tail())
                    started = time.monotonic()
                    try:
                        client.rerank(QUERIES[0], DOCUMENTS)
                        codes["OK"] += 1
                        ok_in_a_row += 1
                    except RerankerError as exc:
                        codes[exc.code.name] += 1
                        ok_in_a_row = 0
                    slowest = max(slowest, time.monotonic() - started)
                assert set(codes) <= {"OK", "DEADLINE_EXCEEDED"}, codes
                assert slowest < 2 + 1.0, slowest  # never past the call's deadline (plus scheduling slack)
            finally:
                for stub in stubs:
                    os.kill(stub, signal.SIGCONT)
