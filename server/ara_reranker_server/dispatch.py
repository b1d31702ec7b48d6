"""Which waiting chunk goes to the model next: the gateway's own queue in front of Triton's.

A large request is cut into many chunks; sent all at once, they fill Triton's queue and every small request
behind them waits for all of them. The dispatcher keeps at most ``window_tokens`` padded tokens of chunks at
Triton per model (enough to keep its instances busy) and queues the rest here, where the order is chosen:

- interactive requests before batch requests;
- within a class, requests take turns chunk by chunk (round robin), so a small request's one chunk waits
  for at most one chunk of each other request, not for all of a large one's;
- batch work never starves: while batch chunks wait, at least one chunk in every ``batch_share`` dispatched
  is theirs.

A request that fits in one chunk has a lane of its own beside the window (``reserve_tokens``): it does not wait
for a large request's chunks to leave Triton, only for Triton to take it (with a second model instance, at once).
``max_chunks`` bounds the chunks of large requests (those cut into several chunks) at Triton: one fewer than the
model's instances keeps an instance free for everything else, so a small call never waits for a large request's
forward pass to end (fair by default). A large request's chunk held back by it lets others' chunks go past.

A chunk whose call is cancelled or whose deadline passes while it waits here is dropped before it reaches
Triton (abandoned work is never computed). A chunk larger than the window runs when nothing else is at Triton.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

__all__ = ["Dispatcher", "PRIORITIES"]

T = TypeVar("T")
PRIORITIES = ("interactive", "batch")  # served in this order


@dataclass(eq=False)
class _Waiter:
    tokens: int
    whole: bool  # the request's only chunk: not bounded by max_chunks
    ready: asyncio.Future


class Dispatcher:
    """Orders chunks of calls to one model (see the module's doc). ``window_tokens`` 0: no bound, no queue."""

    def __init__(self, window_tokens: int, batch_share: int = 8, reserve_tokens: int = 0, max_chunks: int = 0) -> None:
        """``max_chunks``: chunks of requests cut into several at Triton at once (0: no bound; settable later, e.g. once
        Triton's instance count is known)."""
        self.window_tokens = window_tokens
        self.batch_share = batch_share
        self.reserve_tokens = reserve_tokens
        self.max_chunks = max_chunks
        self.in_flight = 0  # padded tokens of chunks at Triton (outside the reserve lane)
        self.chunks_in_flight = 0  # chunks of requests cut into several (what max_chunks bounds)
        self.in_flight_reserved = 0  # padded tokens of one-chunk interactive requests sent through their own lane
        # priority -> request key -> its waiting chunks (first come first); requests in turn order.
        self._waiting: dict[str, OrderedDict[object, deque[_Waiter]]] = {p: OrderedDict() for p in PRIORITIES}
        self._since_batch = 0  # interactive chunks dispatched since the last batch one

    @property
    def waiting(self) -> int:
        """Chunks queued here. Also read from the metrics thread (``reranker_dispatch_queued_chunks``): ``list()`` copies
        each queue in one step, so the event loop changing it meanwhile cannot break the count."""
        return sum(len(chunks) for queue in list(self._waiting.values()) for chunks in list(queue.values()))

    async def run(self, tokens: int, priority: str, request: object, call: Callable[[], Awaitable[T]],
                  timeout_s: float | None = None, whole: bool = False) -> T:
        """``call()`` once this chunk (``tokens`` padded tokens, of ``request``; ``whole``: the request's only
        chunk) may go to the model. TimeoutError when ``timeout_s`` passes first (the chunk is then never sent)."""
        if whole and priority == "interactive" and self.in_flight_reserved + tokens <= self.reserve_tokens:
            self.in_flight_reserved += tokens
            try:
                return await call()
            finally:
                self.in_flight_reserved -= tokens
        waiter = _Waiter(tokens, whole, asyncio.get_running_loop().create_future())
        if not (self.window_tokens or self.max_chunks) or self._goes_now(waiter):
            self._take(tokens, whole)
        else:
            self._waiting[priority].setdefault(request, deque()).append(waiter)
            self._dispatch()  # goes at once if it is its turn and fits
            if not waiter.ready.done():
                try:
                    await asyncio.wait_for(asyncio.shield(waiter.ready), timeout_s)
                except BaseException:
                    if waiter.ready.done() and not waiter.ready.cancelled():
                        self._release(tokens, whole)  # it was let through as it gave up: hand its room on
                    else:
                        waiter.ready.cancel()
                        self._forget(priority, request, waiter)
                    raise
        try:
            return await call()
        finally:
            self._release(tokens, whole)

    def set_max_chunks(self, max_chunks: int) -> None:
        """Bound the chunks at Triton outside the reserve lane (0: no bound) from now on."""
        self.max_chunks = max_chunks
        self._dispatch()

    def _goes_now(self, waiter: _Waiter) -> bool:
        """Whether a new chunk may go without queueing: it fits, max_chunks lets it, and no waiting chunk could go
        first (no overtaking the queue; chunks that max_chunks holds back do not count)."""
        return (self._fits(waiter.tokens) and not self._bounded(waiter)
                and all(self._turn(priority) is None for priority in PRIORITIES))

    def _fits(self, tokens: int) -> bool:
        return self.in_flight == 0 or not self.window_tokens or self.in_flight + tokens <= self.window_tokens

    def _bounded(self, waiter: _Waiter) -> bool:
        """Whether max_chunks holds this chunk back."""
        return not waiter.whole and bool(self.max_chunks) and self.chunks_in_flight >= self.max_chunks

    def _take(self, tokens: int, whole: bool) -> None:
        self.in_flight += tokens
        self.chunks_in_flight += not whole

    def _release(self, tokens: int, whole: bool) -> None:
        self.in_flight -= tokens
        self.chunks_in_flight -= not whole
        self._dispatch()

    def _turn(self, priority: str) -> object | None:
        """The request of ``priority`` whose chunk is next, in turn order, skipping those max_chunks holds back."""
        for request, chunks in self._waiting[priority].items():
            if not self._bounded(chunks[0]):
                return request
        return None

    def _dispatch(self) -> None:
        """Let waiting chunks through while they fit, in the order the module's doc states."""
        while True:
            turns = {priority: self._turn(priority) for priority in PRIORITIES}
            interactive, batch = turns["interactive"], turns["batch"]
            if batch is not None and (interactive is None or self._since_batch >= self.batch_share - 1):
                priority = "batch"
            elif interactive is not None:
                priority = "interactive"
            else:
                return
            queue, request = self._waiting[priority], turns[priority]
            chunks = queue[request]
            waiter = chunks[0]
            if not self._fits(waiter.tokens):
                return  # no overtaking on tokens: a large chunk is not starved by smaller ones
            chunks.popleft()
            queue.pop(request)
            if chunks:
                queue[request] = chunks  # its next chunk waits for the other requests' turns
            self._since_batch = 0 if priority == "batch" else self._since_batch + 1
            self._take(waiter.tokens, waiter.whole)
            waiter.ready.set_result(None)

    def _forget(self, priority: str, request: object, waiter: _Waiter) -> None:
        chunks = self._waiting[priority].get(request)
        if chunks is None:
            return
        try:
            chunks.remove(waiter)
        except ValueError:
            pass
        if not chunks:
            self._waiting[priority].pop(request, None)
        self._dispatch()  # a smaller chunk behind it may fit now
