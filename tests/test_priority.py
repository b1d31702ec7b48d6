"""Priority and abandoned work through the real tritonserver and gateway.

- With the shipped config, a request queued behind the busy instance is taken as soon as the instance frees.
- Where an operator declares priority levels, Triton's dynamic batcher takes a level-1 (interactive) request before
  level-2 (batch) ones queued earlier: the gateway sends each request's priority.
- Through the gateway, a small interactive call overtakes a large batch call's waiting chunks, with the same
  scores either way; a call that gives up has its waiting chunks dropped, not computed.
- Bad priorities are refused in each API's dialect, naming the field or header.
"""

from __future__ import annotations

import asyncio
import os
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import InferRequestedOutput

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc
from ara_reranker_server.launcher.gateway_process import GatewayProcess
from ara_reranker_server.launcher.triton_launcher import MODEL_NAME, TritonServer
from bench.queued_wait import inputs as rows
from bench.queued_wait import tries
from tests.helpers import metric_sum, triton_samples, wait_for, wait_for_async
from tools.arabic_text import QUERIES, long_passage, mixed_passages


def test_a_request_queued_behind_the_busy_instance_is_taken_as_the_instance_frees(triton):
    """With priority levels or a bounded queue declared, Triton's batcher does not prefetch, and a request that arrived
    while the instance was busy waited, in about one try of four, for the next arrival or for the batcher's 500 ms
    idle wait (bench.queued_wait). The shipped config declares neither: no try waits."""
    figures = tries(triton.grpc_url, busy_rows=8, busy_tokens=512, lag_s=0.02, count=12)
    assert figures["wait_after_free_ms"]["max"] < 250, figures


def model_cpu_s(server: TritonServer) -> float:
    """CPU seconds used so far by the server's model processes (the Python-backend stubs, where forward passes run)."""
    ticks = 0
    for pid in server.stub_pids():
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def dispatch_queued(gateway: GatewayProcess) -> float:
    """Chunks waiting in the gateway's dispatch queue (every model)."""
    return metric_sum(gateway.metrics_url, "reranker_dispatch_queued_chunks")


@pytest.fixture(scope="module")
def triton_with_levels(make_triton):
    """A tritonserver whose config declares two priority levels, as an operator may, with one instance: what the
    test below holds busy."""
    return make_triton(priority_levels=2, default_priority_level=1, instances=1)


async def test_triton_with_levels_takes_an_interactive_request_before_earlier_batch_ones(triton_with_levels):
    """The instance is held by a long request; three batch requests queue, then one interactive request. Each
    queued request has 200 rows, so an execute() takes one of them (max_batch_size 256): the order they finish in
    is the order the batcher took them."""
    client = aioclient.InferenceServerClient(triton_with_levels.grpc_url)
    finished: list[str] = []

    async def send(label: str, inputs, priority: int) -> None:
        await client.infer(MODEL_NAME, inputs, outputs=[InferRequestedOutput("logits")], priority=priority, client_timeout=120)
        finished.append(label)

    def queued() -> float:
        return triton_samples(triton_with_levels.metrics_url).get("nv_inference_pending_request_count", 0.0)

    try:
        cpu_before = model_cpu_s(triton_with_levels)
        blocker = asyncio.create_task(send("blocker", rows(64, 2048), 1))
        # The blocker reaches the instance first (it runs for seconds: the rest queue): Triton's queue is empty and
        # the model's process computes (nothing else is sent to this Triton).
        await wait_for_async(lambda: (queued(), model_cpu_s(triton_with_levels) - cpu_before),
                             lambda now: now[0] == 0 and now[1] >= 0.2, "(Triton's queue, model CPU seconds) of the blocker at work")
        tasks = [asyncio.create_task(send(f"batch{i}", rows(200, 16), 2)) for i in range(3)]
        await wait_for_async(queued, lambda count: count == 3, "the three batch requests queued at Triton")
        tasks.append(asyncio.create_task(send("interactive", rows(200, 16), 1)))
        await asyncio.gather(blocker, *tasks)
    finally:
        await client.close()
    assert finished[0] == "blocker", finished
    assert finished.index("interactive") < finished.index("batch1"), finished


@pytest.fixture(scope="module")
def windowed(make_gateway):
    """A gateway whose dispatch window holds one small chunk at Triton: everything else waits in its queue."""
    return make_gateway(chunk_size=4, dispatch_window_tokens=2048, max_chunk_tokens=4096)


def test_a_small_interactive_call_overtakes_a_large_batch_call_with_the_same_scores(windowed, reference, rng):
    big = [long_passage(rng) for _ in range(48)]
    small = mixed_passages(rng, 4)
    done: dict[str, float] = {}

    async def main() -> None:
        from ara_reranker_client import AsyncRerankerClient

        async with AsyncRerankerClient(windowed.target, timeout=120) as client:
            async def call(label: str, documents, priority: str):
                results = await client.rerank(QUERIES[0], documents, raw_scores=True, priority=priority)
                done[label] = time.monotonic()
                return results

            batch = asyncio.create_task(call("batch", big, "batch"))
            await wait_for_async(lambda: dispatch_queued(windowed), lambda chunks: chunks > 0,
                                 "the batch call's chunks queued in the gateway", 60.0)
            interactive = await call("interactive", small, "interactive")
            batch_results = await batch
        for results, documents in ((interactive, small), (batch_results, big)):
            logits = [r.logit for r in sorted(results, key=lambda r: r.index)]
            np.testing.assert_allclose(logits, reference.logits(QUERIES[0], documents), atol=1e-4, rtol=0)

    asyncio.run(main())
    assert done["interactive"] < done["batch"], done


def test_a_call_that_gives_up_has_its_waiting_chunks_dropped(windowed, triton, rng):
    import tritonclient.grpc as triton_grpc

    def rows_computed() -> int:
        with triton_grpc.InferenceServerClient(triton.grpc_url) as stats:
            return int(stats.get_inference_statistics(MODEL_NAME, as_json=True)["model_stats"][0].get("inference_count", 0))

    documents = [long_passage(rng) for _ in range(240)]
    before = rows_computed()
    with RerankerClient(windowed.target, timeout=1.5, retry=None) as client:
        with pytest.raises(RerankerError) as gave_up:
            client.rerank(QUERIES[1], documents)
    assert gave_up.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    gave_up_at = rows_computed()
    # Let whatever was already at Triton finish: the gateway serves no call and has no chunk queued, Triton's queue
    # is empty. Chunks sent after the call ended would show in one of the three; a chunk still computing then is
    # not counted below, which can only lower ``settled`` (the bounds are upper ones).
    quiet = {"gateway calls": 0, "gateway queue": 0, "Triton queue": 0}
    wait_for(lambda: {"gateway calls": metric_sum(windowed.metrics_url, "reranker_requests_in_flight"),
                      "gateway queue": dispatch_queued(windowed),
                      "Triton queue": triton_samples(triton.metrics_url).get("nv_inference_pending_request_count", 0.0)},
             lambda now: now == quiet, "the gateway and Triton at rest")
    settled = rows_computed()
    # Once the call ended, Triton finished only what was already there (the window holds one chunk of 4 rows; two more
    # tolerated for the gateway's and this statistics call's timing), and the chunks still waiting were never sent.
    assert settled - gave_up_at <= 3 * 4, (before, gave_up_at, settled)
    assert settled - before < len(documents), (settled - before, len(documents))


def test_bad_priorities_are_refused_naming_the_field_in_each_dialect(gateway):
    with grpc.insecure_channel(gateway.target) as channel:
        stub = reranker_pb2_grpc.RerankerStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Rerank(reranker_pb2.RerankRequest(query="q", documents=["d"], priority=7), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "priority" in refused.value.details()
    with httpx.Client(base_url=gateway.http_url, timeout=30) as http:
        headers = {"x-reranker-priority": "urgent"}
        cohere = http.post("/v2/rerank", json={"model": "", "query": "q", "documents": ["d"]}, headers=headers)
        tei = http.post("/rerank", json={"query": "q", "texts": ["d"]}, headers=headers)
        ok = http.post("/rerank", json={"query": "q", "texts": ["d"]}, headers={"x-reranker-priority": "Batch"})
    assert cohere.status_code == 400 and "x-reranker-priority" in cohere.json()["message"], cohere.text
    assert tei.status_code == 422 and "x-reranker-priority" in tei.json()["error"], tei.text
    assert ok.status_code == 200, ok.text
