"""The harness the tests and the benchmarks share (bench/): the closed-loop load generator, the Prometheus parser,
the model-repository editor, and the check that a served model scores as the in-process one. Unit tests: no process
is started."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import numpy as np
import pytest

from ara_reranker_client import RerankResult
from ara_reranker_server import triton_config
from bench import prometheus
from bench.llm_rerankers import ScoreMismatch, check_scores, scores_by_document
from bench.loadgen import ClosedLoop
from bench.profile import summarize
from bench.repository import edited_copy

pytestmark = pytest.mark.unit  # starts no process: make test-unit

PAGE = """# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="ara_reranker",version="1"} 12
nv_inference_count{model="other",version="1"} 5
ara_reranker_forward_tokens_bucket{model="ara_reranker",le="8192"} 3
ara_reranker_forward_tokens_bucket{model="ara_reranker",le="+Inf"} 4
ara_reranker_forward_tokens_sum{model="ara_reranker"} 9000
reranker_gateway_workers_up 2
"""


def test_the_parser_keeps_exposed_names_and_sums_over_the_labels_not_asked_for():
    page = prometheus.parse(PAGE)
    assert page.value("nv_inference_count") == 17  # not renamed: the # TYPE line would make it nv_inference
    assert page.value("nv_inference_count", model="ara_reranker") == 12
    assert page.value("nv_inference_count", model="absent") == 0 and not page.has("nv_inference_count", model="absent")
    assert page.value("ara_reranker_forward_tokens_bucket", le="8192") == 3
    assert page.buckets("ara_reranker_forward_tokens") == {8192.0: 3, float("inf"): 4}
    assert page.totals(model="ara_reranker") == {"nv_inference_count": 12, "ara_reranker_forward_tokens_sum": 9000}
    assert page.value("reranker_gateway_workers_up") == 2


def test_the_closed_loop_accounts_for_every_call_errors_included():
    seen: list[int] = []
    lock = threading.Lock()

    def call(_session, n: int) -> int:
        with lock:
            seen.append(n)
        time.sleep(0.002)
        if n % 3 == 2:
            raise ValueError(f"call {n}")
        return n

    with ClosedLoop(call, 3, first=10) as calls:
        calls.wait_ended(30, timeout_s=30)
    outcomes = calls.outcomes
    assert len(outcomes) == calls.started == len(seen) >= 30
    assert sorted(seen) == list(range(10, 10 + len(seen)))  # the callers walk one order
    assert all(o.ended - o.started >= 0.002 for o in outcomes)  # each call's own time, from its start to its end
    assert {o.value for o in outcomes if o.ok} == {n for n in seen if n % 3 != 2}
    assert all(isinstance(o.error, ValueError) for o in outcomes if not o.ok) and calls.ended(ok_only=True) < len(outcomes)


def test_waiting_for_calls_that_do_not_come_times_out():
    release = threading.Event()
    calls = ClosedLoop(lambda _session, _n: release.wait(), 1)
    with calls:
        with pytest.raises(TimeoutError, match="0 of 1 calls ended"):
            calls.wait_ended(1, timeout_s=0.2)
        release.set()


def test_a_calls_own_deadline_ends_the_loop():
    calls = ClosedLoop(lambda _session, n: n, 2, seconds=0.1)
    calls.start().join(timeout_s=10)
    assert calls.ended() == calls.started > 0


def test_async_callers_share_one_event_loop_and_their_sessions_are_made_on_it():
    loops, sessions = set(), []

    @contextlib.asynccontextmanager
    async def session():
        sessions.append(asyncio.get_running_loop())
        yield len(sessions)

    async def call(session_number: int, n: int) -> tuple[int, int]:
        loops.add(asyncio.get_running_loop())
        await asyncio.sleep(0.002)
        if n % 4 == 3:
            raise ValueError(f"call {n}")
        return session_number, n

    with ClosedLoop(call, 5, session=session) as calls:
        assert calls.wait_warm(timeout_s=30, min_s=0.05)
        calls.wait_ended(40, timeout_s=30)
    outcomes = calls.outcomes
    assert len(outcomes) == calls.started >= 40 and len(loops) == 1 and set(sessions) == loops and len(sessions) == 5
    assert sorted(o.value[1] if o.ok else int(str(o.error).split()[1]) for o in outcomes) == list(range(len(outcomes)))
    assert {o.caller for o in outcomes if o.ok} == set(range(5))  # warm: every caller had an answer
    assert {o.value[0] for o in outcomes if o.ok} == set(range(1, 6))  # each caller on a session of its own
    assert all(o.ended - o.started >= 0.002 for o in outcomes) and calls.ended(ok_only=True) < len(outcomes)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["threads", "tasks"])
def test_a_shared_session_is_opened_once_for_all_callers(asynchronous):
    opened: list[object] = []

    class Session:
        def __enter__(self) -> object:
            opened.append(object())
            return opened[-1]

        def __exit__(self, *exc) -> None:
            pass

        async def __aenter__(self) -> object:
            return self.__enter__()

        async def __aexit__(self, *exc) -> None:
            pass

    def call(session, _n: int) -> object:
        time.sleep(0.001)
        return session

    async def acall(session, _n: int) -> object:
        await asyncio.sleep(0.001)
        return session

    with ClosedLoop(acall if asynchronous else call, 4, session=Session, shared_session=True) as calls:
        calls.wait_ended(20, timeout_s=30)
    assert len(opened) == 1 and {o.value for o in calls.outcomes} == {opened[0]}


def test_waiting_for_a_warm_up_that_does_not_come_says_so():
    release = threading.Event()
    calls = ClosedLoop(lambda _session, n: n if n < 1 else release.wait(), 2)
    with calls:
        assert not calls.wait_warm(timeout_s=0.2)  # one caller answered, the other not
        release.set()
        assert calls.wait_warm(timeout_s=30)


def test_the_repository_editor_changes_the_cpu_config_through_the_model_config_message(tmp_path):
    repository = edited_copy(tmp_path, {"parameters.dtype": "int8"}, lambda config: config.instance_group[0].__setattr__("count", 3),
                             max_queue_size=7, priority_levels=2, model_py="# replaced\n")
    config = triton_config.load(repository / "ara_reranker/configs/cpu.pbtxt")
    original = triton_config.load(triton_config.CONFIGS["cpu"])
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 7 and config.dynamic_batching.priority_levels == 2
    assert config.parameters["dtype"].string_value == "int8" and config.instance_group[0].count == 3
    assert config.max_batch_size == original.max_batch_size  # what was not asked for is unchanged
    assert (repository / "ara_reranker/1/model.py").read_text() == "# replaced\n"
    with pytest.raises(TypeError, match="unknown config fields"):
        edited_copy(tmp_path / "other", max_batch=4)


def test_the_llm_benchmark_refuses_a_service_that_scores_otherwise_than_the_limit():
    reference = [np.array([0.25, 0.75]), np.array([0.5])]
    served = [[RerankResult(index=1, score=0.75 + 5e-5), RerankResult(index=0, score=0.25)], [RerankResult(index=0, score=0.5)]]
    answers = [scores_by_document(answer) for answer in served]  # ranked results back in their documents' order
    assert check_scores(reference, answers, "service") == pytest.approx(5e-5, abs=1e-9)
    with pytest.raises(ScoreMismatch, match="request 1's scores differ"):
        check_scores(reference, [answers[0], np.array([0.5 + 2e-4])], "service")
    with pytest.raises(ScoreMismatch, match="request 0 answered 1 scores for 2 documents"):
        check_scores(reference, [np.array([0.25]), answers[1]], "service")


def test_the_profile_splits_the_gateways_samples_into_tokenizer_machinery_and_its_own_python():
    collapsed = "\n".join([
        "MainThread;Reranker.rerank (ara_reranker_server/reranking.py:90);PairTokenizer._document_encodings (ara_reranker_server/tokenization.py:253) 5",
        "MainThread;Handle._run (asyncio/events.py:80) 3",
        "poller;Thread.run (threading.py:982) 1",
        "MainThread;Calls._record (ara_reranker_server/api/calls.py:140) 1",
    ])
    parts = list(summarize(collapsed)["parts_percent"].values())
    assert parts == [50.0, 40.0, 10.0, 0.0]  # tokenizer, gRPC/asyncio machinery, the gateway's Python, other
