"""A gateway of several worker processes (``workers`` > 1) on one set of ports: calls spread over the workers and
every score equals the model in-process; /metrics sums nothing away (a worker label per series); a worker that dies
is started again; SIGTERM stops them all. Real tritonserver, real gateway processes."""

from __future__ import annotations

import os
import signal

import numpy as np
import psutil
import pytest
import requests

from ara_reranker_client import RerankerClient
from ara_reranker_server.launcher.child_process import wait_until
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from bench import prometheus
from tools.arabic_text import QUERIES, mixed_passages

WORKERS = 2


def workers_up(gateway: GatewayProcess) -> int:
    page = prometheus.scrape(gateway.metrics_url, timeout_s=10)
    return int(page.value("reranker_gateway_workers_up")) if page.has("reranker_gateway_workers_up") else -1


def ok_calls_by_worker(gateway: GatewayProcess) -> dict[str, float]:
    wanted = {("api", "reranker.v1"), ("code", "OK"), ("method", "Rerank"), ("model", "tiny")}
    samples = prometheus.scrape(gateway.metrics_url, timeout_s=10).samples
    return {dict(labels)["worker"]: value for (name, labels), value in samples.items()
            if name == "reranker_requests_total" and wanted <= labels and "worker" in dict(labels)}


def children(gateway: GatewayProcess) -> list[psutil.Process]:
    return psutil.Process(gateway.process.pid).children()


@pytest.fixture(scope="module")
def workers_gateway(make_gateway):
    gateway = make_gateway(workers=WORKERS)
    wait_until(lambda: workers_up(gateway) == WORKERS, 120, f"{WORKERS} gateway workers serving metrics", gateway.log_tail)
    return gateway


def test_calls_spread_over_the_workers_and_scores_are_the_models(workers_gateway, reference, rng):
    documents = mixed_passages(rng, 6)
    expected = reference.logits(QUERIES[0], documents)
    before = ok_calls_by_worker(workers_gateway)
    calls = 24
    for _ in range(calls):  # a new channel per call: a new connection, which the kernel gives to either worker
        with RerankerClient(workers_gateway.target) as client:
            results = client.rerank(QUERIES[0], documents, raw_scores=True)
        got = {r.index: r.score for r in results}
        np.testing.assert_allclose([got[i] for i in range(len(documents))], expected, atol=1e-4, rtol=0)
    after = ok_calls_by_worker(workers_gateway)
    served = {worker: after[worker] - before.get(worker, 0.0) for worker in after}
    assert sorted(served) == [str(k) for k in range(WORKERS)]
    assert sum(served.values()) == calls  # every call counted once, by the worker that served it
    assert min(served.values()) > 0, f"one worker served every call: {served}"


def test_the_http_apis_are_served_on_the_shared_port(workers_gateway, reference, rng):
    documents = mixed_passages(rng, 3)
    reply = requests.post(f"{workers_gateway.http_url}/v1/rerank", json={"query": QUERIES[2], "documents": documents},
                          timeout=60)
    assert reply.status_code == 200, reply.text
    assert sorted(r["index"] for r in reply.json()["results"]) == [0, 1, 2]


def test_a_worker_that_dies_is_started_again(workers_gateway, rng):
    victim = children(workers_gateway)[0]
    victim.send_signal(signal.SIGKILL)
    wait_until(lambda: not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE, 30, "the killed worker gone")
    wait_until(lambda: len(children(workers_gateway)) == WORKERS and victim.pid not in {c.pid for c in children(workers_gateway)}
               and workers_up(workers_gateway) == WORKERS, 120, "the worker started again and serving metrics",
               lambda: f"children {[c.pid for c in children(workers_gateway)]}, up {workers_up(workers_gateway)}")
    with RerankerClient(workers_gateway.target) as client:
        assert len(client.rerank(QUERIES[1], mixed_passages(rng, 2))) == 2


def test_sigterm_stops_every_worker(triton, tiny_model_dir, tmp_path):
    args = {"triton_endpoints": triton.grpc_url, "tokenizer": str(tiny_model_dir), "workers": str(WORKERS)}
    with GatewayProcess(args, log_path=tmp_path / "gateway.log") as gateway:
        wait_until(lambda: len(children(gateway)) == WORKERS, 60, "the workers started")
        pids = [c.pid for c in children(gateway)]
        assert gateway.stop() == 0
    wait_until(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids),
               30, "every worker stopped", lambda: str([pid for pid in pids if psutil.pid_exists(pid)]))


@pytest.mark.parametrize("cpu_max, expected", [("max 100000", "cores"), ("150000 100000", 2), ("50000 100000", 1),
                                               ("100000000 100000", "cores"), (None, "cores")])
def test_workers_0_means_one_per_core_the_container_may_use(tmp_path, cpu_max, expected):
    from ara_reranker_server.settings import Settings
    from ara_reranker_server.workers import worker_count

    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max + "\n")
    cores = len(os.sched_getaffinity(0))
    want = cores if expected == "cores" else min(expected, cores)
    assert worker_count(Settings(workers=0), path) == want
    assert worker_count(Settings(workers=3), path) == 3
