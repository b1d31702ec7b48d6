"""Small helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import Counter
from typing import AsyncIterator, Awaitable, Callable, Mapping, Sequence, TypeVar

import grpc
import numpy as np
import tritonclient.grpc.aio as aioclient

from ara_reranker_client import RerankerClient, RerankerError
from ara_reranker_model.inputs import padded_rows
from ara_reranker_server.launcher.child_process import wait_until
from ara_reranker_server.launcher.triton_launcher import MODEL_NAME, TritonServer
from bench import prometheus

T = TypeVar("T")
PAD_ID = 1  # XLM-R <pad>; padding ids are never read by the model, only the mask decides


def wait_for(observe: Callable[[], T], holds: Callable[[T], bool], what: str, timeout_s: float = 30.0,
             poll_s: float = 0.05, detail: Callable[[], str] = lambda: "", shown: Callable[[T], object] = lambda seen: seen) -> T:
    """``observe()`` until ``holds`` it, for at most ``timeout_s``; the value that held.

    The tests' one bounded wait: a test that must let something happen first waits for what it can see (a gauge, a
    counter, a process state, a log line), never for a fixed time, which is too short on a loaded machine and too
    long elsewhere. On timeout it fails: TimeoutError naming ``what`` was awaited, the last value seen (``shown(value)``
    where the whole value is too much to read) and ``detail()``. The polling loop is the launcher's (``wait_until``)."""
    seen: list = []

    def check() -> bool:
        seen[:] = [observe()]
        return holds(seen[0])

    wait_until(check, timeout_s, what, lambda: f"last seen: {shown(seen[0])!r}\n{detail()}", poll_s)
    return seen[0]


async def wait_for_async(observe: Callable[[], T | Awaitable[T]], holds: Callable[[T], bool], what: str, timeout_s: float = 30.0,
                         poll_s: float = 0.05, detail: Callable[[], str] = lambda: "") -> T:
    """``wait_for`` from a coroutine: it polls on a worker thread and runs ``observe`` (a function or a coroutine
    function) on this event loop, which goes on serving the tasks awaited meanwhile."""
    loop = asyncio.get_running_loop()

    async def observe_here():
        value = observe()
        return await value if inspect.isawaitable(value) else value

    def observe_from_thread():
        return asyncio.run_coroutine_threadsafe(observe_here(), loop).result(timeout_s)

    return await asyncio.to_thread(wait_for, observe_from_thread, holds, what, timeout_s, poll_s, detail)


def metric_sum(url: str, name: str, **labels: str) -> float:
    """The sum of a /metrics page's samples called ``name`` whose labels include ``labels``."""
    return prometheus.scrape(url).value(name, **labels)


def triton_samples(metrics_url: str, model: str = MODEL_NAME) -> dict[str, float]:
    """One scrape of Triton's metrics port: the samples labelled with ``model``, by name, summed over their other
    labels (histogram buckets left out)."""
    return prometheus.scrape(metrics_url).totals(model=model)


def no_report_half_sent(samples: Mapping[str, float]) -> bool:
    """model.py is not in the middle of a report: its per-pass padded tokens add up to its padded-token counter, the
    last figure each report moves (so every other figure of the executes counted there is in too)."""
    return samples.get("ara_reranker_forward_tokens_sum", 0.0) == samples.get("ara_reranker_padded_tokens_total", 0.0)


# What moves while Triton works or model.py reports (the latter up to REPORT_INTERVAL_S, 0.25 s, after an execute()).
_MOVING = ("nv_inference_exec_count", "nv_inference_request_success", "ara_reranker_execute_rows_count", "ara_reranker_real_tokens_total")


def wait_triton_at_rest(metrics_url: str, timeout_s: float = 30.0, quiet_s: float = 1.0) -> dict[str, float]:
    """Triton's samples (``triton_samples``) once it is at rest: nothing in its queue, no model.py report half sent,
    and neither Triton's executions nor model.py's figures moved for ``quiet_s``. The quiet spell stands in for what
    neither exports: an execute() running (neither queued nor counted yet) and the figures model.py holds until its
    next report (within REPORT_INTERVAL_S; Triton counts an execute() whose requests were all refused, model.py
    does not, so their counts never meet). TimeoutError with the last samples when it does not come to rest."""
    moved = {"at": time.monotonic(), "figures": None}

    def at_rest(samples: dict[str, float]) -> bool:
        figures = [samples.get(name, 0.0) for name in _MOVING]
        if figures != moved["figures"]:
            moved.update(at=time.monotonic(), figures=figures)
        return (samples.get("nv_inference_pending_request_count", 0.0) == 0 and no_report_half_sent(samples)
                and time.monotonic() - moved["at"] >= quiet_s)

    return wait_for(lambda: triton_samples(metrics_url), at_rest, "Triton at rest, model.py's metrics reported", timeout_s)


def padded(rows: list[list[int]], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token rows to ``width`` (default: the longest row): INT64 (input_ids, attention_mask),
    as the gateway pads a chunk."""
    return padded_rows(rows, PAD_ID, width)


@contextlib.asynccontextmanager
async def triton_client(server: TritonServer) -> AsyncIterator[aioclient.InferenceServerClient]:
    """tritonclient's asyncio gRPC client of ``server``, closed on the way out."""
    client = aioclient.InferenceServerClient(server.grpc_url)
    try:
        yield client
    finally:
        await client.close()


def code_of(call) -> grpc.StatusCode:
    """The gRPC status a client call ends with (OK when it returns)."""
    try:
        call()
    except RerankerError as exc:
        return exc.code
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def rerank_until_served(client, query: str, documents: list[str], within_s: float, each_try: Callable[[], None] = lambda: None,
                        detail: Callable[[], str] = lambda: "") -> tuple[list, Counter, float]:
    """Rerank (raw scores) until a call succeeds, for at most ``within_s``, calling ``each_try()`` before each call:
    the results, the codes of the calls that failed meanwhile, and the seconds it took. TimeoutError with the
    codes and ``detail()`` when none succeeds in time."""
    codes: Counter = Counter()
    started = time.monotonic()

    def one_try() -> list | None:
        each_try()
        try:
            return client.rerank(query, documents, raw_scores=True)
        except RerankerError as exc:
            codes[exc.code.name] += 1
            return None

    results = wait_for(one_try, lambda served: served is not None, "a call served", within_s, poll_s=0.2,
                       detail=lambda: f"failed calls: {dict(codes)}\n{detail()}")
    return results, codes, time.monotonic() - started


# Dynamic-batcher settings the shipped configs leave out (docs/api.md "Priorities"), as a test adds them.
# Scores of the same pair from two calls may differ by float noise: Triton batches the calls' chunks
# differently (other padding widths, other kernels), ~1e-7 on scores, ~1e-6 on logits.
SAME_SCORE = 1e-5


def v1_ranking(target: str, query: str, documents: Sequence[str], api_key: str | None = None,
               **options) -> list[tuple[int, float]]:
    """reranker.v1's answer from the gateway at ``target`` (on a channel of its own): (index, score) best first, as
    ``assert_same_ranking`` takes it; ``options`` as ``RerankerClient.rerank`` takes them (``raw_scores=True``: the
    logits)."""
    with RerankerClient(target, api_key=api_key, timeout=60) as client:
        return [(r.index, r.score) for r in client.rerank(query, documents, **options)]


def v1_scores(client: RerankerClient, query: str, documents: Sequence[str], **options) -> np.ndarray:
    """reranker.v1's scores (``raw_scores=True``: logits) in the documents' order, float32."""
    return np.array([r.score for r in sorted(client.rerank(query, documents, **options), key=lambda r: r.index)],
                    dtype=np.float32)


def assert_same_ranking(got: list[tuple[int, float]], expected: list[tuple[int, float]], top: int | None = None) -> None:
    """``got`` (index, score) best first is ``expected``'s ranking cut to ``top`` (default: all of it), up to
    float noise: the same number of results, each score within SAME_SCORE of expected's for that index,
    best first, and no document left out that expected scored clearly above one kept."""
    want = dict(expected)
    assert len(got) == (len(expected) if top is None else min(top, len(expected))), (got, expected)
    assert len({i for i, _ in got}) == len(got)
    for index, score in got:
        assert abs(score - want[index]) <= SAME_SCORE, (index, score, want[index])
    scores = [s for _, s in got]
    assert all(a >= b - SAME_SCORE for a, b in zip(scores, scores[1:])), scores
    kept = {i for i, _ in got}
    floor = min(want[i] for i in kept)
    assert all(want[i] <= floor + SAME_SCORE for i in want if i not in kept)
