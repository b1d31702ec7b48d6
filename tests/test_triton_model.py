"""The Triton model (model_repository/ara_reranker) through a real tritonserver and tritonclient.

What callers of the model rely on: logits equal the in-process reference whatever the padding, the
request mix or the dynamic batch; concurrent requests each get their own rows back; a bad request gets
a clear INVALID_ARGUMENT of its own, even inside a dynamic batch, and the server goes on serving; and
micro-batches stay under the token budget. Weights are the offline tiny model's (random, from a fixed
seed): the values mean nothing as rankings, but tokenization, truncation and compute are the real ones.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Sequence

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

# The partition the scorer cuts with, and how it then spreads it over its forward threads.
from ara_reranker_model.batching import LOW_PRIORITY_NICE, MIN_SHARE_TOKENS, ForwardPool, micro_batches, spread
from ara_reranker_model.store import REAL_MODEL_MAX_LENGTH
from ara_reranker_server.launcher.triton_launcher import MODEL_NAME, MODEL_REPOSITORY

# The partition the scorer cuts with, and how it then spreads it over its forward threads.
from bench import prometheus
from tests.helpers import (
    no_report_half_sent,
    padded,
    triton_client,
    triton_samples,
    wait_for,
    wait_for_async,
    wait_triton_at_rest,
)
from tools.arabic_text import MODEL_CARD_CANDIDATES, MODEL_CARD_QUERY, QUERIES, long_passage, mixed_passages, passage

ATOL = 1e-4  # float32 tolerance between batched/padded logits and the unpadded reference
VOCAB = 250002
MAX_LENGTH = REAL_MODEL_MAX_LENGTH  # the tiny model's, like ARA-Reranker-V1's
LOWERED = 512  # the long pairs of ``pairs`` are cut here, as a gateway with max_input_length 512 does
INVALID = "StatusCode.INVALID_ARGUMENT"

Rows = list[list[int]]


# ---------------------------------------------------------------------------------------------- helpers
def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


async def infer(
    client: aioclient.InferenceServerClient, ids: np.ndarray, mask: np.ndarray, datatype: str = "INT64"
) -> np.ndarray:
    """Logits [rows] of one request (raises InferenceServerException on an error response)."""
    result = await client.infer(
        MODEL_NAME,
        [_input("input_ids", ids, datatype), _input("attention_mask", mask, datatype)],
        outputs=[grpcclient.InferRequestedOutput("logits")],
    )
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape == (ids.shape[0], 1)
    return logits[:, 0]


async def statistics(client: aioclient.InferenceServerClient) -> dict[str, int]:
    """Cumulative model counters: requests (success), rows (inference_count), executions."""
    stats = (await client.get_inference_statistics(MODEL_NAME, as_json=True))["model_stats"][0]
    return {
        "requests": int(stats["inference_stats"]["success"].get("count", 0)),
        "rows": int(stats.get("inference_count", 0)),
        "executions": int(stats.get("execution_count", 0)),
    }


async def statistics_since(client, before: dict[str, int], requests: int) -> dict[str, int]:
    """Counter deltas since ``before`` once ``requests`` more have been recorded (Triton records a
    request as it is released, which can come a moment after the client holds the response), waiting at
    most 30 s (a loaded machine): the deltas then, for the caller's assertions to judge; TimeoutError if fewer came."""

    async def counts() -> dict[str, int]:
        return {key: value - before[key] for key, value in (await statistics(client)).items()}

    return await wait_for_async(counts, lambda now: now["requests"] >= requests, f"{requests} more requests recorded")


def metric(metrics_url: str, series: str) -> float:
    """One series of model.py's own metrics from Triton's metrics port: a name (the series labelled with the model's name)
    or a whole series as exposed, ``name{label="value",...}``."""
    ((name, labels),) = prometheus.parse(f"{series} 0").samples if "{" in series else [(series, {("model", MODEL_NAME)})]
    page = prometheus.scrape(metrics_url)
    assert page.has(name, **dict(labels)), f"{series} not exported on {metrics_url}"
    return page.value(name, **dict(labels))


def still(metrics_url: str, names: Sequence[str], timeout_s: float = 30.0) -> list[float]:
    """``metric`` of each of ``names`` once Triton is at rest: model.py's reporter thread has handed over what earlier
    calls left (it does so every REPORT_INTERVAL_S, a quarter of a second), and nothing is queued."""
    wait_triton_at_rest(metrics_url, timeout_s)
    return [metric(metrics_url, name) for name in names]


def load_model_module() -> ModuleType:
    """model.py imported by path, for its pure helpers, under a name of its own (Triton loads it as a file, not as
    part of a package). It imports ``triton_python_backend_utils``, put on sys.path as Triton itself does (the real
    utils module shipped with the bundled Triton, not a stand-in; the helpers tested here touch nothing that only
    the stub adds)."""
    import pytriton

    utils_dir = str(Path(pytriton.__file__).parent / "tritonserver/backends/python")
    if utils_dir not in sys.path:
        sys.path.append(utils_dir)
    spec = importlib.util.spec_from_file_location("ara_reranker_triton_model", MODEL_REPOSITORY / MODEL_NAME / "1/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
async def client(triton):
    async with triton_client(triton) as client:
        yield client


@pytest.fixture(scope="module")
def batching_triton(make_triton):
    """A tritonserver whose batcher holds requests for up to 3 s before executing, so that requests sent
    together are deterministically handed to one execute(), however loaded the machine."""
    return make_triton(max_queue_delay_microseconds=3_000_000)


@pytest.fixture
async def batching_client(batching_triton):
    async with triton_client(batching_triton) as client:
        yield client


@pytest.fixture(scope="module")
def pairs(reference) -> Rows:
    """Token rows of Arabic (query, passage) pairs: 1 to 12 sentences, the model card's example, and
    three passages far over 512 tokens, truncated (document only) at 512 as a gateway with
    max_input_length 512 does."""
    rng = np.random.default_rng(2024)
    rows = [reference.encode(MODEL_CARD_QUERY, doc) for doc in MODEL_CARD_CANDIDATES]
    for query in QUERIES:
        rows += [reference.encode(query, doc) for doc in mixed_passages(rng, 6)]
    for query in QUERIES[:3]:
        document = long_passage(rng)
        assert len(reference.tokenizer(query, document)["input_ids"]) > LOWERED
        rows.append(reference.encode(query, document, LOWERED))
    return rows


@pytest.fixture(scope="module")
def long_pairs(reference) -> Rows:
    """Pairs of several thousand tokens, up to the model's whole context (8192: one cut there), and a
    few short ones, as the real model is used by default."""
    rng = np.random.default_rng(8192)
    rows = [reference.encode(QUERIES[i], passage(rng, sentences)) for i, sentences in enumerate((150, 300, 420, 700))]
    rows += [reference.encode(QUERIES[4], doc) for doc in mixed_passages(rng, 4)]
    lengths = sorted(len(row) for row in rows)
    assert lengths[-1] == MAX_LENGTH and lengths[-4] > 2000, lengths
    return rows


@pytest.fixture(scope="module")
def expected(reference, pairs) -> np.ndarray:
    """The reference logits of ``pairs``, one unpadded pair at a time."""
    return reference.logits_of_ids(pairs)


@pytest.fixture(scope="module")
def good(pairs, expected) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small valid request and its reference logits: what must still work after any bad request."""
    ids, mask = padded(pairs[:3])
    return ids, mask, expected[:3]


# --------------------------------------------------------------------------------------------- 1 parity
def test_pairs_cover_mixed_lengths_and_truncation(pairs):
    lengths = [len(row) for row in pairs]
    assert min(lengths) < 40 and lengths.count(LOWERED) == 3 and max(lengths) == LOWERED
    assert len(set(lengths)) > len(lengths) // 2


async def test_pairs_of_thousands_of_tokens_up_to_the_whole_context_equal_reference(client, reference, long_pairs):
    """The real model's 8,192-token context: each long pair alone, and all of them in one padded request."""
    expected = reference.logits_of_ids(long_pairs)
    np.testing.assert_allclose(await infer(client, *padded(long_pairs)), expected, atol=ATOL, rtol=0)
    alone = [await infer(client, *padded([row])) for row in long_pairs[:4]]
    np.testing.assert_allclose(np.concatenate(alone), expected[:4], atol=ATOL, rtol=0)


async def test_one_request_with_many_rows_equals_reference(client, pairs, expected):
    ids, mask = padded(pairs)  # every row padded to the request's longest (512)
    np.testing.assert_allclose(await infer(client, ids, mask), expected, atol=ATOL, rtol=0)


async def test_one_row_per_request_equals_reference(client, pairs, expected):
    got = [await infer(client, *padded([row])) for row in pairs]
    np.testing.assert_allclose(np.concatenate(got), expected, atol=ATOL, rtol=0)


async def test_extra_padding_does_not_change_logits(client, pairs, expected):
    ids, mask = padded(pairs[:8], width=MAX_LENGTH + 40)  # wider than the model: padding is stripped
    ids[mask == 0] = 7  # whatever sits under a 0 mask is ignored
    np.testing.assert_allclose(await infer(client, ids, mask), expected[:8], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------- 2 batching
async def test_concurrent_requests_are_batched_and_each_gets_its_own_logits(batching_client, pairs, expected):
    client = batching_client
    rng = np.random.default_rng(7)
    requests = []  # (row indices into pairs, extra padding) of 32 requests: 1-8 rows, ragged widths
    for _ in range(32):
        members = rng.choice(len(pairs), size=int(rng.integers(1, 9)), replace=False)
        requests.append((members, int(rng.integers(0, 5))))
    before = await statistics(client)

    async def one(members: np.ndarray, extra: int) -> np.ndarray:
        rows = [pairs[m] for m in members]
        return await infer(client, *padded(rows, width=max(len(row) for row in rows) + extra))

    results = await asyncio.gather(*(one(members, extra) for members, extra in requests))
    counts = await statistics_since(client, before, requests=32)

    for (members, _), logits in zip(requests, results):
        np.testing.assert_allclose(logits, expected[members], atol=ATOL, rtol=0)
    assert counts["requests"] == 32
    assert counts["rows"] == sum(len(members) for members, _ in requests)
    assert counts["executions"] == 1, f"the 32 requests were not handed to one execute(): {counts}"


# ----------------------------------------------------------------------------------------- 3 bad input
def _bad_requests() -> dict[str, tuple[np.ndarray, np.ndarray, str, str]]:
    """Malformed tensors -> (input_ids, attention_mask, datatype, what the error must say). Triton's
    frontend refuses most of these itself (dtype, batch dimension, byte size) before model.py sees them;
    the rest model.py refuses. Either way: INVALID_ARGUMENT, nothing computed."""
    ok_ids, ok_mask = padded([[0, 100, 200, 2], [0, 300, 2]])
    return {
        "rows of ids and mask differ": (
            np.ones((2, 4), np.int64), np.ones((3, 4), np.int64), "INT64", "batch size does not match"
        ),
        "lengths of ids and mask differ": (
            np.ones((2, 4), np.int64), np.ones((2, 5), np.int64), "INT64",
            r"input_ids \[2, 4\] and attention_mask \[2, 5\] must be equal",
        ),
        "INT32 tensors": (
            ok_ids.astype(np.int32), ok_mask.astype(np.int32), "INT32",
            "data-type is 'INT32', but model 'ara_reranker' expects 'INT64'",
        ),
        "FP32 tensors": (
            ok_ids.astype(np.float32), ok_mask.astype(np.float32), "FP32",
            "data-type is 'FP32', but model 'ara_reranker' expects 'INT64'",
        ),
        # Triton 2.51 words this one as a byte-size mismatch; only the input's name is worth pinning.
        "zero rows": (np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64), "INT64", "attention_mask|input_ids"),
        "zero length": (np.zeros((2, 0), np.int64), np.zeros((2, 0), np.int64), "INT64", r"no tokens: shape \[2, 0\]"),
        "more rows than max_batch_size": (
            np.tile(ok_ids, (129, 1)), np.tile(ok_mask, (129, 1)), "INT64", "batch-size must be <= 256"
        ),
        "one dimension": (ok_ids[0], ok_mask[0], "INT64", "unexpected shape"),
    }


def _bad_rows() -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """Requests Triton accepts and model.py must refuse (these can share a dynamic batch with good ones)."""
    ids, mask = padded([[0, 100, 200, 2], [0, 300, 2]])
    empty_mask = mask.copy()
    empty_mask[1] = 0
    left_padded = mask[:, ::-1].copy()
    holes = mask.copy()
    holes[0, 1] = 0
    not_binary = mask * 2
    too_big, negative = ids.copy(), ids.copy()
    too_big[0, 2] = VOCAB
    negative[1, 1] = -5
    long_ids, long_mask = padded([[0] + [100] * (MAX_LENGTH - 1), [0] + [100] * MAX_LENGTH])
    return {
        "a row with no tokens": (ids, empty_mask, "row 1 has no tokens"),
        "left padding": (ids, left_padded, "right padding"),
        "a hole in the mask": (ids, holes, "right padding"),
        "mask values other than 0/1": (ids, not_binary, "right padding"),
        "id beyond the vocabulary": (too_big, mask, rf"must lie in \[0, {VOCAB}\), got \[0, {VOCAB}\]"),
        "negative id": (negative, mask, r"must lie in \[0, \d+\), got \[-5, "),
        "a row over 8192 tokens": (
            long_ids, long_mask, f"row 1 has {MAX_LENGTH + 1} tokens; the model takes at most {MAX_LENGTH}"
        ),
    }


BAD_REQUESTS = _bad_requests()
BAD_ROWS = _bad_rows()


async def _expect_invalid(client, ids, mask, pattern: str, datatype: str = "INT64") -> None:
    with pytest.raises(InferenceServerException) as caught:
        await infer(client, ids, mask, datatype)
    assert caught.value.status() == INVALID, caught.value
    assert re.search(pattern, caught.value.message()), caught.value.message()


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_malformed_request_is_refused_and_the_server_goes_on(client, good, case):
    ids, mask, datatype, pattern = BAD_REQUESTS[case]
    await _expect_invalid(client, ids, mask, pattern, datatype)
    good_ids, good_mask, good_logits = good
    np.testing.assert_allclose(await infer(client, good_ids, good_mask), good_logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", list(BAD_ROWS))
async def test_invalid_tokens_are_refused_and_the_server_goes_on(client, good, case):
    ids, mask, pattern = BAD_ROWS[case]
    await _expect_invalid(client, ids, mask, pattern)
    good_ids, good_mask, good_logits = good
    np.testing.assert_allclose(await infer(client, good_ids, good_mask), good_logits, atol=ATOL, rtol=0)


async def test_bad_request_in_a_dynamic_batch_fails_alone(batching_client, pairs, expected):
    """Bad requests interleaved with good ones, sent together to a batcher that holds them, so that one
    execute() gets them all: each bad one gets its own error, every good one its own correct logits."""
    client = batching_client
    bad = list(BAD_ROWS.items())
    burst: list[tuple[str, np.ndarray, np.ndarray, object]] = []  # (kind, ids, mask, expected / pattern)
    for k in range(2 * len(bad)):
        if k % 2:
            name, (ids, mask, pattern) = bad[k // 2]
            burst.append((name, ids, mask, pattern))
        else:
            members = [(3 * k + j) % len(pairs) for j in range(1 + k % 4)]
            burst.append(("good", *padded([pairs[m] for m in members]), expected[members]))
    before = await statistics(client)
    results = await asyncio.gather(*(infer(client, ids, mask) for _, ids, mask, _ in burst), return_exceptions=True)
    counts = await statistics_since(client, before, requests=len(burst))

    for (kind, _, _, want), got in zip(burst, results):
        if kind == "good":
            assert not isinstance(got, Exception), got
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
        else:
            assert isinstance(got, InferenceServerException), f"{kind}: no error"
            assert got.status() == INVALID and re.search(want, got.message()), f"{kind}: {got}"
    # Everything reached the model (Triton counts a model's error response as a completed request), in
    # one execute(): good and bad requests were handled side by side.
    assert counts["requests"] == len(burst)
    assert counts["executions"] == 1, f"the burst was not handed to one execute(): {counts}"


async def test_server_still_ready_after_bad_input(triton, client, good):
    assert await client.is_server_live() and await client.is_model_ready(MODEL_NAME)
    good_ids, good_mask, good_logits = good
    np.testing.assert_allclose(await infer(client, good_ids, good_mask), good_logits, atol=ATOL, rtol=0)


# -------------------------------------------------------------------------------------- 4 micro-batches
def padded_cost(sorted_lengths, slices) -> int:
    return sum((s.stop - s.start) * int(sorted_lengths[s.start]) for s in slices)


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 600), min_size=1, max_size=120), workers=st.integers(1, 8),
       budget=st.sampled_from([512, 2048, 8192]))
def test_spreading_cuts_micro_batches_into_shares_without_adding_padding(lengths, workers, budget):
    sorted_lengths = np.array(sorted(lengths, reverse=True))
    slices = micro_batches(sorted_lengths, budget, 16)
    spread_slices = spread(slices, sorted_lengths, workers)
    covered = [i for s in spread_slices for i in range(s.start, s.stop)]
    assert covered == list(range(len(lengths)))  # every row once, in order
    assert padded_cost(sorted_lengths, spread_slices) <= padded_cost(sorted_lengths, slices)
    if workers > 1:
        share = max(padded_cost(sorted_lengths, slices) / (2 * workers), MIN_SHARE_TOKENS)
        assert all(s.stop - s.start == 1 or (s.stop - s.start) * sorted_lengths[s.start] <= share + sorted_lengths[s.start]
                   for s in spread_slices)
    else:
        assert spread_slices == slices


def test_uniform_rows_are_spread_over_every_worker():
    """Rows of one length make one least-cost micro-batch; spread over 2 threads it becomes 4 equal runs."""
    sorted_lengths = np.full(64, 121)
    [whole] = micro_batches(sorted_lengths, 8192, 16)
    assert [s.stop - s.start for s in spread([whole], sorted_lengths, 2)] == [16, 16, 16, 16]


def test_forward_pool_runs_every_micro_batch_once_side_by_side_and_keeps_failures_apart():
    """The caller's thread is one of the workers (a lone micro-batch runs without a thread hop); with more,
    ``workers`` run at once; each item runs once, smallest first, each reported to ``done`` as it finishes, and a
    failing one is returned in its place."""
    pool = ForwardPool(2)
    try:
        caller = threading.current_thread().name
        [(item, ran_on)] = pool.map(lambda _: threading.current_thread().name, [7], cost=lambda i: i)
        assert (item, ran_on) == (7, caller)
        together = threading.Barrier(2, timeout=30)  # both items must be running at once to pass it

        def work(i: int) -> str:
            together.wait()
            return threading.current_thread().name

        assert sorted(name == caller for _, name in pool.map(work, [1, 2], cost=lambda i: i)) == [False, True]

        def fail_three(i: int) -> int:
            if i == 3:
                raise MemoryError("out of memory")
            return i * 10

        finished = []
        results = pool.map(fail_three, [5, 3, 0, 7, 1, 6, 2, 4], cost=lambda i: i, done=lambda i, r: finished.append(i))
        assert [i for i, _ in results] == list(range(8))  # smallest cost first: small requests are answered first
        assert sorted(finished) == list(range(8))  # each reported once, as it finished
        assert all(r == i * 10 for i, r in results if i != 3) and isinstance(dict(results)[3], MemoryError)
    finally:
        pool.close()


def test_forward_pool_runs_micro_batches_above_the_low_priority_cost_at_a_lower_cpu_priority():
    """Bulk micro-batches (cost above low_priority_cost) run on threads of their own at LOW_PRIORITY_NICE more than
    the process; the others on the caller's threads at its own priority; every item once, failures kept apart."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    pool = ForwardPool(2, low_priority_cost=100)
    try:
        def nice(i: int) -> int:
            if i == 150:
                raise MemoryError("out of memory")
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        results = dict(pool.map(nice, [500, 10, 150, 20, 100, 300], cost=lambda i: i))
        assert sorted(results) == [10, 20, 100, 150, 300, 500]
        assert {results[i] for i in (10, 20, 100)} == {base}  # at or under the cost: the caller's priority
        assert {results[i] for i in (300, 500)} == {min(19, base + LOW_PRIORITY_NICE)}
        assert isinstance(results[150], MemoryError)
        assert [i for i, _ in pool.map(lambda i: i, [9, 8], cost=lambda i: i)] == [8, 9]  # no bulk item: as before
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller's thread untouched
    finally:
        pool.close()


def greedy_padded_size(sorted_lengths: np.ndarray, budget: int, overhead: int) -> int:
    """Cost (padded tokens + overhead per batch) of filling each micro-batch as full as the budget allows."""
    cost, start = 0, 0
    while start < len(sorted_lengths):
        width = int(sorted_lengths[start])
        rows = min(max(1, budget // width), len(sorted_lengths) - start)
        cost, start = cost + rows * width + overhead, start + rows
    return cost


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=MAX_LENGTH), max_size=300),
    budget=st.integers(min_value=MAX_LENGTH, max_value=20000),
    overhead=st.integers(min_value=0, max_value=4096),
)
def test_micro_batches_cover_rows_in_order_under_the_token_budget(lengths, budget, overhead):
    sorted_lengths = np.array(sorted(lengths, reverse=True), dtype=np.int64)
    slices = list(micro_batches(sorted_lengths, budget, overhead))
    assert [i for s in slices for i in range(s.start, s.stop)] == list(range(len(lengths)))
    for s in slices:
        rows, width = s.stop - s.start, int(sorted_lengths[s.start])
        assert rows >= 1 and rows * width <= budget  # the padded micro-batch fits the budget
    # The cuts are the cheapest: never more padded tokens + per-pass overhead than filling each batch full.
    cost = sum((s.stop - s.start) * int(sorted_lengths[s.start]) + overhead for s in slices)
    assert cost <= greedy_padded_size(sorted_lengths, budget, overhead)
    assert cost == (optimal_cost(lengths, budget, overhead) if lengths else 0)


def test_micro_batches_keep_unlike_lengths_apart_when_passes_are_cheap():
    """One long row with short ones: the short ones are not padded to the long one's width."""
    slices = micro_batches(np.array([512, 40, 38, 35, 30]), 8192, 16)
    assert [(s.start, s.stop) for s in slices] == [(0, 1), (1, 5)]


def optimal_cost(lengths: list[int], budget: int, overhead: int) -> int:
    """The least padded tokens + ``overhead`` per pass of any cut of the length-sorted rows into
    micro-batches under ``budget`` (written here, independently of ara_reranker_model.batching)."""
    ordered = sorted(lengths, reverse=True)
    best = [0] + [None] * len(ordered)  # best[i]: cheapest cost of the first i rows
    for end in range(1, len(ordered) + 1):
        best[end] = min(
            best[start] + (end - start) * ordered[start] + overhead
            for start in range(end)
            if (end - start) * ordered[start] <= budget
        )
    return best[-1]


async def test_rows_are_length_sorted_into_budgeted_micro_batches(triton, client, pairs, expected):
    """Through Triton's metrics port: for one request, the tokens model.py computed plus the per-pass
    overhead are the least any cut of the length-sorted rows under the budget allows, every pass fits the
    budget, and far fewer tokens are computed than padding all rows to the longest."""
    config = (await client.get_model_config(MODEL_NAME, as_json=True))["config"]
    budget = int(config["parameters"]["max_batch_tokens"]["string_value"])
    overhead = int(config["parameters"].get("batch_overhead_tokens", {}).get("string_value", "0"))
    workers = int(config["parameters"]["forward_workers"]["string_value"]) or len(os.sched_getaffinity(0))
    by_length = sorted(range(len(pairs)), key=lambda m: len(pairs[m]))
    members = by_length[-2:] * 12 + by_length[:20]  # 24 rows of 512 tokens and 20 short ones, shuffled
    members = list(np.random.default_rng(3).permutation(members))
    lengths = [len(pairs[m]) for m in members]
    names = ("ara_reranker_real_tokens_total", "ara_reranker_padded_tokens_total", "ara_reranker_forward_rows_count",
             f'ara_reranker_forward_tokens_bucket{{model="{MODEL_NAME}",le="{budget}"}}')
    before = still(triton.metrics_url, names)  # nothing of an earlier test's calls left to report

    logits = await infer(client, *padded([pairs[m] for m in members]))
    # model.py's reporter thread hands the figures to Triton within a quarter of a second of execute(), token counters
    # last: once the real tokens are all counted, the rest of that call's figures are in too.
    wait_for(lambda: triton_samples(triton.metrics_url), lambda now: now[names[0]] - before[0] >= sum(lengths) and no_report_half_sent(now),
             "model.py's metrics reported, none half sent")
    real, computed, passes, within_budget = (metric(triton.metrics_url, n) - b for n, b in zip(names, before))

    np.testing.assert_allclose(logits, expected[members], atol=ATOL, rtol=0)
    assert real == sum(lengths)
    assert within_budget == passes  # every forward pass had at most `budget` padded tokens
    sorted_lengths = np.array(sorted(lengths, reverse=True))
    least = micro_batches(sorted_lengths, budget, overhead)
    assert padded_cost(sorted_lengths, least) + overhead * len(least) == optimal_cost(lengths, budget, overhead)
    planned = spread(least, sorted_lengths, workers)  # then cut for the forward threads, no padding added
    assert (computed, passes) == (padded_cost(sorted_lengths, planned), len(planned))
    assert computed < 0.9 * len(lengths) * max(lengths)


def test_a_relative_model_dir_is_taken_from_the_project_root(monkeypatch):
    """config.pbtxt's model_dir "models/ara-reranker-v1" names <project>/models/..., the directory that
    holds model_repository/ (Triton passes the model's own directory as args["model_repository"])."""
    monkeypatch.delenv("ARA_RERANKER_MODEL_DIR", raising=False)
    resolve = load_model_module().resolve_model_dir
    args = {"model_repository": str(MODEL_REPOSITORY / MODEL_NAME)}
    assert resolve(args, {"model_dir": "models/tiny"}) == MODEL_REPOSITORY.parent / "models/tiny"
    assert resolve(args, {"model_dir": "/srv/models/x"}) == Path("/srv/models/x")
    monkeypatch.setenv("ARA_RERANKER_MODEL_DIR", "/mnt/weights")
    assert resolve(args, {"model_dir": "models/tiny"}) == Path("/mnt/weights")
