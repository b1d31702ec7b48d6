"""The gateway's dispatcher alone (dispatch.py): which waiting chunk goes to the model next.

Each scenario fills the window with a chunk held open by the test, queues chunks behind it and records the order
in which their calls start."""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

import pytest

from ara_reranker_server.dispatch import Dispatcher

pytestmark = pytest.mark.unit  # starts no process: make test-unit

T = TypeVar("T")


class Model:
    """A stand-in for Triton: records which chunk each call was, and holds the first until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.hold = asyncio.Event()

    def call(self, label: str, hold: bool = False):
        async def run() -> str:
            self.started.append(label)
            if hold:
                await self.hold.wait()
            return label
        return run


async def settle() -> None:
    """Let every ready task run until it blocks. sleep(0) is one turn of the event loop, not time: the dispatcher and
    the stand-in model run on this loop alone, so a few turns order them the same way on any machine."""
    for _ in range(20):
        await asyncio.sleep(0)


async def started(run: Awaitable[T]) -> asyncio.Task[T]:
    """``run`` (a chunk's ``dispatcher.run(...)``) as a task, the loop turned until it blocks (``settle``): the chunk is
    at the model or waiting in the dispatcher's queue when this returns."""
    task = asyncio.create_task(run)
    await settle()
    return task


async def test_interactive_chunks_overtake_waiting_batch_chunks():
    dispatcher, model = Dispatcher(window_tokens=100, batch_share=100), Model()
    blocker = await started(dispatcher.run(100, "interactive", "blocker", model.call("blocker", hold=True)))
    batch = [await started(dispatcher.run(100, "batch", "job", model.call(f"batch{i}"))) for i in range(3)]
    interactive = await started(dispatcher.run(100, "interactive", "search", model.call("search")))
    assert dispatcher.waiting == 4 and model.started == ["blocker"]
    model.hold.set()
    await asyncio.gather(blocker, interactive, *batch)
    assert model.started == ["blocker", "search", "batch0", "batch1", "batch2"]


async def test_a_small_request_waits_for_one_chunk_of_a_large_one_not_all():
    dispatcher, model = Dispatcher(window_tokens=100), Model()
    blocker = await started(dispatcher.run(100, "interactive", "big", model.call("big-held", hold=True)))
    big = [await started(dispatcher.run(100, "interactive", "big", model.call(f"big{i}"))) for i in range(10)]
    small = await started(dispatcher.run(10, "interactive", "small", model.call("small")))
    model.hold.set()
    await asyncio.gather(blocker, small, *big)
    assert model.started.index("small") == 2, model.started  # after the held chunk and one more of the big request


async def test_batch_work_gets_its_share_under_a_steady_interactive_flood():
    dispatcher, model = Dispatcher(window_tokens=100, batch_share=4), Model()
    blocker = await started(dispatcher.run(100, "interactive", "held", model.call("held", hold=True)))
    tasks = [asyncio.create_task(dispatcher.run(100, "batch", "job", model.call(f"batch{i}"))) for i in range(3)]
    tasks += [asyncio.create_task(dispatcher.run(100, "interactive", f"user{i}", model.call(f"user{i}"))) for i in range(12)]
    await settle()
    model.hold.set()
    await asyncio.gather(blocker, *tasks)
    order = model.started[1:]
    positions = [i for i, label in enumerate(order) if label.startswith("batch")]
    assert positions == [3, 7, 11], order  # one in every batch_share dispatched, while batch work waits


async def test_a_cancelled_or_expired_chunk_never_reaches_the_model():
    dispatcher, model = Dispatcher(window_tokens=100), Model()
    blocker = await started(dispatcher.run(100, "interactive", "held", model.call("held", hold=True)))
    cancelled = await started(dispatcher.run(100, "interactive", "gone", model.call("gone")))
    cancelled.cancel()
    with pytest.raises(TimeoutError):
        await dispatcher.run(100, "batch", "late", model.call("late"), timeout_s=0.05)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert dispatcher.waiting == 0
    model.hold.set()
    await blocker
    assert model.started == ["held"] and dispatcher.in_flight == 0
    assert await dispatcher.run(100, "interactive", "next", model.call("next")) == "next"  # the window is whole again


async def test_a_chunk_larger_than_the_window_runs_when_the_model_is_free_and_no_bound_means_no_queue():
    dispatcher, model = Dispatcher(window_tokens=100), Model()
    assert await dispatcher.run(1000, "interactive", "huge", model.call("huge")) == "huge"
    unbounded = Dispatcher(window_tokens=0)
    held = await started(unbounded.run(10**9, "batch", "a", model.call("a", hold=True)))
    assert await unbounded.run(10**9, "batch", "b", model.call("b")) == "b" and unbounded.waiting == 0
    model.hold.set()
    await held


async def test_a_one_chunk_interactive_request_takes_its_own_lane_past_a_full_window():
    dispatcher, model = Dispatcher(window_tokens=100, reserve_tokens=50), Model()
    held = await started(dispatcher.run(100, "interactive", "big", model.call("big", hold=True)))
    queued = asyncio.create_task(dispatcher.run(100, "interactive", "big", model.call("big-next")))
    assert await dispatcher.run(40, "interactive", "small", model.call("small"), whole=True) == "small"
    assert model.started == ["big", "small"]  # past the window, and past the big request's waiting chunk
    over = asyncio.create_task(dispatcher.run(60, "interactive", "other", model.call("too-big-for-the-lane"), whole=True))
    batch = await started(dispatcher.run(10, "batch", "job", model.call("batch-whole"), whole=True))
    assert model.started == ["big", "small"]  # over the lane's room, or batch work: they wait their turn
    model.hold.set()
    await asyncio.gather(held, queued, over, batch)


async def test_max_chunks_keeps_an_instance_free_for_the_reserve_lane():
    """With max_chunks 1 (two instances), a large request holds one chunk at Triton; its next chunks wait even
    though the token window has room, a one-chunk interactive call still goes at once, and raising the bound
    (set_max_chunks, once Triton's instance count is known) lets the waiting chunks through."""
    dispatcher, model = Dispatcher(window_tokens=1000, reserve_tokens=50, max_chunks=1), Model()
    held = await started(dispatcher.run(100, "interactive", "big", model.call("big0", hold=True)))
    rest = [await started(dispatcher.run(100, "interactive", "big", model.call(f"big{i}"))) for i in (1, 2)]
    assert model.started == ["big0"] and dispatcher.waiting == 2 and dispatcher.chunks_in_flight == 1
    assert await dispatcher.run(40, "interactive", "small", model.call("small"), whole=True) == "small"
    assert model.started == ["big0", "small"]
    dispatcher.set_max_chunks(0)  # no bound: the window's tokens alone decide
    await settle()
    assert model.started == ["big0", "small", "big1", "big2"]
    model.hold.set()
    await asyncio.gather(held, *rest)
    assert dispatcher.chunks_in_flight == 0 and dispatcher.in_flight == 0


async def test_max_chunks_alone_bounds_the_chunks_without_a_token_window():
    dispatcher, model = Dispatcher(window_tokens=0, max_chunks=2), Model()
    held = [await started(dispatcher.run(10, "batch", "job", model.call(f"c{i}", hold=True))) for i in range(3)]
    assert model.started == ["c0", "c1"] and dispatcher.waiting == 1
    model.hold.set()
    await asyncio.gather(*held)
    assert model.started == ["c0", "c1", "c2"]


async def test_max_chunks_bounds_only_large_requests_and_others_go_past_their_held_chunks():
    """One-chunk requests outside the reserve lane (a batch call, or one too large for the lane) are not bounded by
    max_chunks and are not held behind a large request's chunk that it holds back; the token window still applies."""
    dispatcher, model = Dispatcher(window_tokens=300, reserve_tokens=0, max_chunks=1), Model()
    held = await started(dispatcher.run(100, "interactive", "big", model.call("big0", hold=True)))
    waiting = await started(dispatcher.run(100, "interactive", "big", model.call("big1")))
    # Bounded waits: held back, these would never start (the test holds big0 until the end).
    assert await asyncio.wait_for(dispatcher.run(100, "batch", "job", model.call("job"), whole=True), 10) == "job"
    assert await asyncio.wait_for(dispatcher.run(100, "interactive", "medium", model.call("medium"), whole=True), 10) == "medium"
    over = await started(dispatcher.run(250, "interactive", "wide", model.call("wide"), whole=True))
    assert model.started == ["big0", "job", "medium"] and dispatcher.waiting == 2  # big1 (bounded), wide (tokens)
    model.hold.set()
    await asyncio.gather(held, waiting, over)
    assert sorted(model.started[3:]) == ["big1", "wide"]
