"""Faults provoked for real: Triton absent, killed mid-load and restarted; failover between two
tritonservers; overload; a misconfigured chunk size; graceful shutdown on SIGTERM.

Each test starts its own tritonserver(s) and gateway on free loopback ports (tiny offline model)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import TritonOptions, TritonServer, free_port
from bench.loadgen import ClosedLoop, Outcome
from bench.repository import edited_copy
from tests.helpers import code_of, metric_sum, wait_for
from tools.arabic_text import QUERIES, long_passage, mixed_passages

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def triton_on_fixed_ports(model_dir: Path, log: Path) -> TritonServer:
    """A TritonServer whose ports stay the same across restarts."""
    return TritonServer(TritonOptions(model_dir=model_dir, grpc_port=free_port(), http_port=free_port(),
                                      metrics_port=free_port(), log_path=log))


def gateway_for(model_dir: Path, endpoints: list[str], tmp_path: Path, **extra: str) -> GatewayProcess:
    args = {"triton_endpoints": ",".join(endpoints), "tokenizer": str(model_dir), "health_interval_s": "0.2", **extra}
    return GatewayProcess(args, log_path=tmp_path / "gateway.log")


def assert_same_scores(got, expected) -> None:
    """Same documents with the same scores (to float32 noise: batch composition may differ)."""
    by_index = lambda results: np.array([r.score for r in sorted(results, key=lambda r: r.index)])  # noqa: E731
    assert sorted(r.index for r in got) == sorted(r.index for r in expected)
    np.testing.assert_allclose(by_index(got), by_index(expected), atol=1e-5, rtol=0)


class Load:
    """Bounded background load (the benchmarks' ClosedLoop): ``threads`` clients sending requests until stopped (or
    ``max_s``), and a kill timed to hit calls in flight."""

    def __init__(self, target: str, documents: list[str], threads: int = 4, max_s: float = 60.0) -> None:
        self.calls = ClosedLoop(lambda client, _: client.rerank(QUERIES[0], documents), threads,
                                session=lambda: RerankerClient(target, timeout=30), seconds=max_s)
        self.killed_at: float | None = None

    @property
    def codes(self) -> list[grpc.StatusCode]:
        return [status(o) for o in self.calls.outcomes]

    @property
    def durations(self) -> list[float]:
        return [o.ended - o.started for o in self.calls.outcomes]

    def __enter__(self) -> "Load":
        self.calls.start()
        return self

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        """Until ``count`` calls have ended; TimeoutError (with the errors so far) when they have not within ``timeout_s``."""
        self.calls.wait_ended(count, timeout_s)

    def kill_mid_call(self, kill: Callable[[], None], gateway: GatewayProcess) -> None:
        """``kill()`` (a Triton) once the gateway is serving a call of the load, so that the kill hits calls in flight."""
        wait_for(lambda: metric_sum(gateway.metrics_url, "reranker_requests_in_flight"), lambda calls: calls >= 1,
                 "a call in flight at the gateway")
        self.killed_at = time.perf_counter()
        kill()

    def in_flight_at_kill(self) -> list[grpc.StatusCode]:
        """The codes of the calls that had started before the kill and ended after it."""
        return [status(o) for o in self.calls.outcomes if o.started < self.killed_at < o.ended]

    def __exit__(self, *exc) -> None:
        self.calls.stop()


def status(outcome: Outcome) -> grpc.StatusCode:
    """The gRPC status a call of the load ended with; an error that is not one is raised (a bug, not a status)."""
    if outcome.ok:
        return grpc.StatusCode.OK
    if isinstance(outcome.error, RerankerError):
        return outcome.error.code
    if isinstance(outcome.error, grpc.RpcError):
        return outcome.error.code()
    raise outcome.error


def test_health_and_unavailable_follow_triton_and_the_gateway_recovers_by_itself(tiny_model_dir, tmp_path, rng):
    triton = triton_on_fixed_ports(tiny_model_dir, tmp_path / "triton.log")
    documents = mixed_passages(rng, 10)
    gateway = gateway_for(tiny_model_dir, [f"127.0.0.1:{triton.options.grpc_port}"], tmp_path)
    gateway.start(wait_serving=False)
    try:
        assert gateway.health() == NOT_SERVING  # no Triton yet
        with RerankerClient(gateway.target, timeout=30) as client:
            assert code_of(lambda: client.rerank(QUERIES[0], documents)) == grpc.StatusCode.UNAVAILABLE
            triton.start()
            gateway.wait_status(SERVING, 30)
            before = client.rerank(QUERIES[0], documents)
            with Load(gateway.target, documents, threads=4) as load:
                load.wait_for(4)
                load.kill_mid_call(triton.kill, gateway)
                gateway.wait_status(NOT_SERVING, 15)
                assert code_of(lambda: client.rerank(QUERIES[0], documents)) == grpc.StatusCode.UNAVAILABLE
            # In-flight calls ended with UNAVAILABLE (never hung, never another code).
            assert load.in_flight_at_kill(), "no call was in flight when Triton was killed"
            assert set(load.codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
            assert grpc.StatusCode.UNAVAILABLE in load.codes
            assert max(load.durations) < 30
            triton.start()  # back on the same ports: the gateway serves again by itself
            gateway.wait_status(SERVING, 30)
            assert_same_scores(client.rerank(QUERIES[0], documents), before)
    finally:
        gateway.stop()
        triton.stop()


def test_failover_between_two_tritons_loses_no_request(tiny_model_dir, tmp_path, rng):
    first = triton_on_fixed_ports(tiny_model_dir, tmp_path / "t1.log")
    second = triton_on_fixed_ports(tiny_model_dir, tmp_path / "t2.log")
    documents = mixed_passages(rng, 16, max_sentences=4)
    with first, second:
        endpoints = [first.grpc_url, second.grpc_url]
        with gateway_for(tiny_model_dir, endpoints, tmp_path, chunk_size="4") as gateway:
            with RerankerClient(gateway.target, timeout=30) as client:
                expected = client.rerank(QUERIES[1], documents)
            with Load(gateway.target, documents, threads=4) as load:
                load.wait_for(8)
                load.kill_mid_call(first.kill, gateway)
                count = len(load.codes)
                load.wait_for(count + 16)
            assert load.in_flight_at_kill(), "no call was in flight when the first Triton was killed"
            assert load.codes and set(load.codes) == {grpc.StatusCode.OK}, f"failed: {[c for c in load.codes if c != grpc.StatusCode.OK]}"
            assert gateway.health() == SERVING  # one endpoint is enough
            with RerankerClient(gateway.target, timeout=30) as client:
                assert_same_scores(client.rerank(QUERIES[1], documents), expected)


def test_a_balanced_target_spreads_over_two_tritons_and_loses_no_request_when_one_dies(tiny_model_dir, tmp_path, rng):
    """One gRPC target naming two Tritons (as a headless Service's DNS name does in Kubernetes; here an
    ipv4: list of two loopback addresses on one port): calls are balanced per request over both, and
    when one is killed under load no call fails."""
    import tritonclient.grpc as triton_grpc

    port = free_port("127.0.0.1")
    servers = [TritonServer(TritonOptions(model_dir=tiny_model_dir, host=host, grpc_port=port, log_path=tmp_path / f"{host}.log"))
               for host in ("127.0.0.1", "127.0.0.2")]
    documents = mixed_passages(rng, 16, max_sentences=4)

    def computed(server: TritonServer) -> int:
        with triton_grpc.InferenceServerClient(server.grpc_url) as stats:
            s = stats.get_inference_statistics("ara_reranker", as_json=True)["model_stats"][0]["inference_stats"]
        return int(s.get("success", {}).get("count", 0))

    with servers[0], servers[1]:
        target = f"ipv4:127.0.0.1:{port},127.0.0.2:{port}"
        with gateway_for(tiny_model_dir, [target], tmp_path, chunk_size="2") as gateway:
            with RerankerClient(gateway.target, timeout=30) as client:
                expected = client.rerank(QUERIES[1], documents)
                for _ in range(3):
                    client.rerank(QUERIES[1], documents)
            assert min(computed(s) for s in servers) > 0, "one Triton behind the target got no traffic"
            with Load(gateway.target, documents, threads=4) as load:
                load.wait_for(8)
                load.kill_mid_call(servers[0].kill, gateway)
                count = len(load.codes)
                load.wait_for(count + 16)
            assert load.in_flight_at_kill(), "no call was in flight when one Triton was killed"
            assert load.codes and set(load.codes) == {grpc.StatusCode.OK}, f"failed: {[c for c in load.codes if c != grpc.StatusCode.OK]}"
            with RerankerClient(gateway.target, timeout=30) as client:
                assert_same_scores(client.rerank(QUERIES[1], documents), expected)


def test_calls_beyond_max_concurrent_rpcs_are_refused_before_they_are_read(triton, tiny_model_dir, tmp_path, rng):
    """gRPC itself refuses RPCs beyond max_concurrent_rpcs with RESOURCE_EXHAUSTED; the calls it took
    complete normally."""
    documents = [long_passage(rng) for _ in range(60)]
    with gateway_for(tiny_model_dir, [triton.grpc_url], tmp_path, max_concurrent_rpcs="2") as gateway:
        with grpc.insecure_channel(gateway.target) as channel:
            stub = reranker_pb2_grpc.RerankerStub(channel)
            request = reranker_pb2.RerankRequest(query=QUERIES[0], documents=documents)
            calls = [stub.Rerank.future(request, timeout=120) for _ in range(8)]
            codes = [code_of(call.result) for call in calls]
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1, codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes.count(grpc.StatusCode.OK) >= 2, codes


def test_flood_past_the_bound_is_resource_exhausted_while_admitted_calls_succeed(triton, tiny_model_dir, tmp_path, reference, rng):
    # Long documents: each call is at Triton long enough (about 10,000 tokens) that the flood's calls, sent at once on
    # one connected channel, overlap whatever the machine's speed; two fit in the bound, the others are refused.
    documents = [long_passage(rng) for _ in range(10)]
    expected = reference.logits(QUERIES[2], documents)
    with gateway_for(tiny_model_dir, [triton.grpc_url], tmp_path, max_documents="10", max_inflight_pairs="20") as gateway, \
            RerankerClient(gateway.target, timeout=120, retry=None) as client:
        client.info()  # connected before the flood

        def call():
            try:
                return client.rerank(QUERIES[2], documents, raw_scores=True)
            except RerankerError as exc:
                return exc
        start = threading.Barrier(24)
        with ThreadPoolExecutor(24) as pool:
            outcomes = list(pool.map(lambda _: (start.wait(), call())[1], range(24)))
        refused = [o for o in outcomes if isinstance(o, RerankerError)]
        served = [o for o in outcomes if not isinstance(o, RerankerError)]
        assert refused and served
        assert {e.code for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "max_inflight_pairs=20" in refused[0].details
        for results in served:
            got = np.array([r.score for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)
            np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        assert len(call()) == 10  # once the flood is over, calls are admitted again


def test_chunks_larger_than_tritons_batch_limit_are_lowered_to_it(triton, tiny_model_dir, tmp_path):
    """chunk_size above config.pbtxt's max_batch_size (256): Triton would refuse every such chunk, so
    the gateway sends chunks of max_batch_size instead, says so in its log, and Info shows it."""
    with gateway_for(tiny_model_dir, [triton.grpc_url], tmp_path, chunk_size="300") as gateway:
        with RerankerClient(gateway.target, timeout=120) as client:
            assert len(client.rerank(QUERIES[0], ["نص"] * 300)) == 300
            assert client.info().limits.chunk_size == 256
        assert "exceeds Triton's max_batch_size 256" in gateway.log_tail(200)


def test_a_forward_pass_failing_on_one_endpoint_is_retried_on_another(tiny_model_dir, tmp_path, reference, rng):
    """One Triton's forward passes fail (as on a GPU out of memory); the other's work: every request
    succeeds with the model's scores, and the failing endpoint stays in rotation (it is up, not down)."""
    broken = tmp_path / "broken"
    broken.mkdir()
    repository = edited_copy(broken)
    failing = repository / "ara_reranker/1/model.py"
    failing.write_text(failing.read_text() + '''

class _OutOfMemory:
    """Fault injection (tests only): every forward pass fails as a CUDA out-of-memory would."""

    def __init__(self, engine):
        self.config = engine.config
        self.takes_token_type_ids = engine.takes_token_type_ids

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


_initialize = TritonPythonModel.initialize


def _initialize_then_fail(self, args):
    _initialize(self, args)  # the warm-up pass included: the model loads and reports ready
    self.scorer.engine = _OutOfMemory(self.scorer.engine)


TritonPythonModel.initialize = _initialize_then_fail
''')
    documents = mixed_passages(rng, 12, max_sentences=4)
    expected = reference.logits(QUERIES[3], documents)
    failing_options = TritonOptions(model_dir=tiny_model_dir, model_repository=repository, log_path=tmp_path / "broken.log")
    with TritonServer(failing_options) as bad, TritonServer(TritonOptions(model_dir=tiny_model_dir, log_path=tmp_path / "good.log")) as good:
        with gateway_for(tiny_model_dir, [bad.grpc_url, good.grpc_url], tmp_path, chunk_size="3") as gateway:
            with RerankerClient(gateway.target, timeout=60) as client:
                for _ in range(4):
                    results = client.rerank(QUERIES[3], documents, raw_scores=True)
                    got = np.array([r.score for r in sorted(results, key=lambda r: r.index)], dtype=np.float32)
                    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
            assert "forward pass failed" in gateway.log_tail(200)  # the bad endpoint was tried, and failed over


def test_sigterm_finishes_calls_in_flight_reports_not_serving_and_exits_0(triton, tiny_model_dir, tmp_path, rng):
    documents = mixed_passages(rng, 120)
    gateway = gateway_for(tiny_model_dir, [triton.grpc_url], tmp_path, drain_s="1.0", grace_period_s="30")
    gateway.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            def call():
                with RerankerClient(gateway.target, timeout=60) as client:
                    return len(client.rerank(QUERIES[0], documents))
            futures = [pool.submit(call) for _ in range(4)]
            wait_for(lambda: metric_sum(gateway.metrics_url, "reranker_requests_in_flight"), lambda calls: calls == 4, "4 calls in flight")
            gateway.terminate()
            gateway.wait_status(NOT_SERVING, 5)  # drain: still answering, but NOT_SERVING
            assert [f.result() for f in futures] == [120] * 4
        assert gateway.process.wait(30) == 0
        with RerankerClient(gateway.target, timeout=5) as client:  # gone: no new calls
            assert code_of(lambda: client.rerank(QUERIES[0], documents[:1])) == grpc.StatusCode.UNAVAILABLE
    finally:
        gateway.stop()


def test_tritons_bounded_queue_surfaces_as_resource_exhausted(tiny_model_dir, tmp_path, rng):
    # The batcher's queue holds 2 requests; one-pair chunks overflow it.
    repository = edited_copy(tmp_path, max_queue_size=2)
    options = TritonOptions(model_dir=tiny_model_dir, model_repository=repository, log_path=tmp_path / "triton.log")
    documents = [long_passage(rng) for _ in range(64)]
    with TritonServer(options) as triton:
        # Every chunk sent at once (no bound on the chunks at Triton), as a gateway of another make might.
        with gateway_for(tiny_model_dir, [triton.grpc_url], tmp_path, chunk_size="1", dispatch_window_chunks="0") as gateway:
            with RerankerClient(gateway.target, timeout=60) as client:
                with pytest.raises(RerankerError) as err:
                    client.rerank(QUERIES[0], documents)
                assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "capacity" in err.value.details
                wait_for(lambda: metric_sum(triton.metrics_url, "nv_inference_pending_request_count"), lambda queued: queued == 0,
                         "Triton's queue drained", 60.0)
                assert len(client.rerank(QUERIES[0], documents[:1])) == 1  # a request that fits still passes


@pytest.fixture(scope="module")
def one_row_stack(tiny_model_dir, tmp_path_factory, make_triton):
    """Triton computing one row per execution, behind a gateway sending one-pair chunks: 1000 documents
    queue as 1000 executions, whatever the machine's speed. Yields (triton, gateway, executed())."""
    import tritonclient.grpc as triton_grpc

    tmp = tmp_path_factory.mktemp("one-row")
    triton = make_triton(max_batch_size=1, max_queue_size=1000)
    with gateway_for(tiny_model_dir, [triton.grpc_url], tmp, chunk_size="1") as gateway:
        stats = triton_grpc.InferenceServerClient(triton.grpc_url)

        def executed() -> int:  # requests the model computed (cancelled ones are answered as failures)
            s = stats.get_inference_statistics("ara_reranker", as_json=True)["model_stats"][0]["inference_stats"]
            return int(s.get("success", {}).get("count", 0))

        yield triton, gateway, executed
        stats.close()


def at_rest(triton: TritonServer, gateway: GatewayProcess, executed: Callable[[], int]) -> int:
    """``executed()`` once the gateway serves no call and no request waits in Triton's queue: from then on nothing
    more of the calls sent so far is computed but the one execution that may be running (one instance, one row)."""
    state = lambda: {"gateway calls": metric_sum(gateway.metrics_url, "reranker_requests_in_flight"),  # noqa: E731
                     "Triton queue": metric_sum(triton.metrics_url, "nv_inference_pending_request_count")}
    wait_for(state, lambda now: now == {"gateway calls": 0, "Triton queue": 0}, "the gateway and Triton at rest", 60.0)
    return executed()


def test_a_cancelled_call_stops_its_pending_triton_work(one_row_stack, rng):
    triton, gateway, executed = one_row_stack
    documents = [long_passage(rng) for _ in range(1000)]
    start = at_rest(triton, gateway, executed)
    with grpc.insecure_channel(gateway.target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        future = stub.Rerank.future(reranker_pb2.RerankRequest(query=QUERIES[0], documents=documents), timeout=120)
        # Cancel once Triton is at work on the call and more of its chunks wait in Triton's queue.
        at_work = lambda: (executed() - start, metric_sum(triton.metrics_url, "nv_inference_pending_request_count"))  # noqa: E731
        cancelled_at, _ = wait_for(at_work, lambda now: now[0] > 0 and now[1] > 0, "(chunks computed, chunks queued) at Triton")
        assert future.cancel()
    ran = at_rest(triton, gateway, executed) - start
    assert 0 < ran < len(documents), f"{ran} of {len(documents)} one-pair chunks ran although the call was cancelled (at {cancelled_at})"
    with RerankerClient(gateway.target, timeout=60) as client:
        assert len(client.rerank(QUERIES[0], documents[:3])) == 3


def test_an_expired_deadline_is_deadline_exceeded_and_stops_the_triton_work(one_row_stack, rng):
    """The caller's deadline passes while Triton works through the call's chunks: the caller gets
    DEADLINE_EXCEEDED, the gateway records DEADLINE_EXCEEDED (not CANCELLED: dashboards and alerts
    count it as an error), and Triton stops computing the call's remaining chunks."""
    triton, gateway, executed = one_row_stack
    documents = [long_passage(rng) for _ in range(1000)]
    start = at_rest(triton, gateway, executed)
    before = {code: gateway_requests(gateway, code) for code in ("DEADLINE_EXCEEDED", "CANCELLED")}
    with RerankerClient(gateway.target, timeout=2.0, split_large_requests=False) as client:
        with pytest.raises(RerankerError) as err:
            client.rerank(QUERIES[0], documents)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, err.value
    ran = at_rest(triton, gateway, executed) - start
    assert ran < len(documents), "Triton computed every chunk although the deadline had passed"
    recorded = lambda: {code: gateway_requests(gateway, code) - before[code] for code in before}  # noqa: E731
    wait_for(recorded, lambda now: now["DEADLINE_EXCEEDED"] >= 1, "a DEADLINE_EXCEEDED recorded", 10.0)
    assert recorded() == {"DEADLINE_EXCEEDED": 1, "CANCELLED": 0}, gateway.log_tail()


def gateway_requests(gateway: GatewayProcess, code: str) -> float:
    """reranker_requests_total{method="Rerank", code=...} of a gateway, every model together."""
    return metric_sum(gateway.metrics_url, "reranker_requests_total", method="Rerank", code=code)

