"""Closed-loop load: ``concurrency`` clients, each sending its next request as soon as the last returns.

``ClosedLoop`` is the one load generator of the tests and the benchmarks: callers (threads, or asyncio tasks for
many callers at little CPU), each with a session of its own (a client, a channel) or one they share, calling until
stopped or out of time, every call's outcome recorded and none left unaccounted for. ``run_level`` measures one concurrency level with it:

A level runs in three phases: ramp (until every client has had one answer, so the queue is in its steady
state), a measurement window, then a drain in which clients finish what they have in flight but send
nothing new. Only calls that complete inside the window count. The window lasts ``duration_s``, or
three ramps if that is longer (at most ``max_window_s``).

Throughput is ``concurrency / mean latency`` of those calls (Little's law, exact for a closed loop whose
clients send again at once). Counting completions in the window instead is not robust: under high
concurrency the answers come in bursts, one per server-side batch, and whether a window holds two or
three bursts is a matter of phase (the count is kept as ``window_pairs_per_s`` all the same).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from bench.stats import percentile
from bench.workload import Request

__all__ = ["ClosedLoop", "LevelResult", "Outcome", "run_level", "run_count", "summarise"]

Call = Callable[[str, list[str]], object]


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int  # completed inside the window
    pairs: int
    window_s: float
    pairs_per_s: float  # Little's law: concurrency / mean latency, in pairs
    requests_per_s: float
    window_pairs_per_s: float  # pairs completed in the window / its length
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    first_error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One call of a ClosedLoop: when it started and ended (``time.perf_counter()``), what it returned or raised, and
    which caller made it."""

    started: float
    ended: float
    value: Any = None
    error: Exception | None = None
    caller: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class ClosedLoop:
    """``callers`` callers, each sending its next call as soon as its last has ended, until ``stop()`` (the end of a
    ``with`` block) or ``seconds`` after the start. Each caller opens ``session()`` (a client, a channel; default
    none) and calls ``call(session, n)``, ``n`` numbering the calls of all callers (to walk a workload in one
    order); ``shared_session``: one session, opened once, for all callers (one channel they share) instead of one each.

    A plain ``call`` runs on a thread per caller. A coroutine function (``async def call``) runs its callers as tasks
    of one asyncio event loop on a thread of its own, for many callers at little CPU; ``session()`` is then an async
    context manager, made on that loop. Every call's Outcome is kept; a call that raises is an outcome too (after an
    error a caller pauses ``pause_after_error_s``), and ``stop()`` raises when a call is left unaccounted for."""

    def __init__(self, call: Callable[[Any, int], Any], callers: int, *, session: Callable[[], Any] | None = None,
                 shared_session: bool = False, seconds: float | None = None, pause_after_error_s: float = 0.0,
                 first: int = 0) -> None:
        self.call, self.callers, self.seconds, self.pause_after_error_s = call, callers, seconds, pause_after_error_s
        self.session, self.shared_session = session or nullcontext, shared_session
        self.started = 0  # calls begun; each ends in ``outcomes``
        self.started_at = 0.0  # time.perf_counter() at start()
        self._numbers = itertools.count(first)
        self._outcomes: list[Outcome] = []
        self._answered: set[int] = set()  # the callers that have had an answer
        self._stop = threading.Event()
        self._lock = threading.Lock()
        runner = self._run_tasks if inspect.iscoroutinefunction(call) else self._run_threads
        self._runner = threading.Thread(target=runner, daemon=True)

    # -------------------------------------------------------------------------------- what each caller does
    def _turns(self) -> Iterator[int]:
        """A caller's call numbers, until stopped or out of time."""
        deadline = None if self.seconds is None else time.perf_counter() + self.seconds
        while not self._stop.is_set() and (deadline is None or time.perf_counter() < deadline):
            with self._lock:
                number = next(self._numbers)
                self.started += 1
            yield number

    def _record(self, outcome: Outcome) -> float:
        """Keep ``outcome``; the seconds its caller pauses before its next call."""
        with self._lock:
            self._outcomes.append(outcome)
            if outcome.ok:
                self._answered.add(outcome.caller)
        return 0.0 if outcome.ok else self.pause_after_error_s

    def _run_threads(self) -> None:
        with self._opened_if(self.shared_session) as shared:
            threads = [threading.Thread(target=self._caller, args=(k, shared), daemon=True) for k in range(self.callers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    def _caller(self, k: int, shared: Any) -> None:
        with self._opened_if(not self.shared_session, shared) as session:
            for number in self._turns():
                started = time.perf_counter()
                try:
                    value, error = self.call(session, number), None
                except Exception as exc:  # counted and reported: a load must not hide failures
                    value, error = None, exc
                if pause := self._record(Outcome(started, time.perf_counter(), value, error, k)):
                    time.sleep(pause)

    def _run_tasks(self) -> None:
        async def caller(k: int, shared: Any) -> None:
            async with self._opened_if(not self.shared_session, shared) as session:
                for number in self._turns():
                    started = time.perf_counter()
                    try:
                        value, error = await self.call(session, number), None
                    except Exception as exc:  # counted and reported, as on threads
                        value, error = None, exc
                    if pause := self._record(Outcome(started, time.perf_counter(), value, error, k)):
                        await asyncio.sleep(pause)

        async def run() -> None:
            async with self._opened_if(self.shared_session) as shared:
                await asyncio.gather(*(caller(k, shared) for k in range(self.callers)))

        asyncio.run(run())

    def _opened_if(self, opened: bool, otherwise: Any = None) -> Any:
        """A new session if ``opened``, else ``otherwise`` (the shared one, or none) as a context manager."""
        return self.session() if opened else nullcontext(otherwise)

    # -------------------------------------------------------------------------------- what its user sees
    @property
    def outcomes(self) -> list[Outcome]:
        """The outcomes so far, in the order the calls ended."""
        with self._lock:
            return list(self._outcomes)

    def ended(self, ok_only: bool = False) -> int:
        """How many calls have ended (``ok_only``: succeeded)."""
        with self._lock:
            return sum(1 for o in self._outcomes if o.ok or not ok_only)

    def wait_ended(self, count: int, timeout_s: float, ok_only: bool = False) -> None:
        """Until ``count`` calls have ended (``ok_only``: succeeded); TimeoutError, with the errors so far, if not
        within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.ended(ok_only) < count:
            if time.monotonic() > deadline:
                errors = sorted({f"{type(o.error).__name__}: {o.error}"[:200] for o in self.outcomes if not o.ok})
                raise TimeoutError(f"{self.ended(ok_only)} of {count} calls {'succeeded' if ok_only else 'ended'} in "
                                   f"{timeout_s:.0f} s; errors: {errors[:5]}")
            if not self._runner.is_alive():
                raise RuntimeError(f"the callers ended after {self.ended(ok_only)} of {count} calls")
            time.sleep(0.01)

    def wait_warm(self, timeout_s: float, min_s: float = 0.0) -> bool:
        """Until every caller has had an answer (a call that succeeded) and ``min_s`` have passed since the start (a
        warm-up), for at most ``timeout_s`` from the start: whether it came to that."""
        def warm() -> bool:
            with self._lock:
                return len(self._answered) == self.callers and time.perf_counter() - self.started_at >= min_s

        while not warm() and time.perf_counter() - self.started_at < timeout_s and self._runner.is_alive():
            time.sleep(0.01)
        return warm()

    def start(self) -> "ClosedLoop":
        self.started_at = time.perf_counter()
        self._runner.start()
        return self

    def join(self, timeout_s: float = 60.0) -> None:
        """Wait for the callers to end by themselves (``seconds``), then check every call is accounted for."""
        self._runner.join(timeout_s)
        if self._runner.is_alive() or self.started != len(self._outcomes):
            raise RuntimeError(f"calls unaccounted for: {self.started} started, {len(self._outcomes)} ended")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop sending; wait for the calls in flight to end."""
        self._stop.set()
        self.join(timeout_s)

    def __enter__(self) -> "ClosedLoop":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_level(call: Call, requests: Sequence[Request], concurrency: int, duration_s: float, *,
              start_at: int = 0, ramp_timeout_s: float = 180.0, max_window_s: float = 60.0, label: str = "") -> LevelResult:
    """Measure one concurrency level (see the module docstring); shows a progress bar."""
    def send(_session, n: int) -> int:
        request = requests[n % len(requests)]
        call(request.query, request.documents)
        return len(request.documents)

    clients = ClosedLoop(send, concurrency, pause_after_error_s=0.05, first=start_at)
    started = time.perf_counter()
    clients.start()
    ramp_deadline = time.monotonic() + ramp_timeout_s
    while clients.ended() < concurrency and time.monotonic() < ramp_deadline:
        time.sleep(0.01)
    window_start = time.perf_counter()
    duration_s = min(max(duration_s, 3 * (window_start - started)), max(max_window_s, duration_s))
    with tqdm(total=round(duration_s, 1), desc=f"{label} c={concurrency}", unit="s", leave=False,
              bar_format="{desc}: {bar} {n:.0f}/{total:.0f}s {postfix}") as bar:
        while (elapsed := time.perf_counter() - window_start) < duration_s:
            time.sleep(min(0.5, duration_s - elapsed))
            bar.n = min(round(time.perf_counter() - window_start, 1), bar.total)
            bar.set_postfix_str(f"{clients.ended()} calls")
    window_end = time.perf_counter()
    clients.stop(timeout_s=ramp_timeout_s)
    return summarise(clients.outcomes, concurrency, window_start, window_end)


def run_count(call: Call, requests: Sequence[Request], count: int, *, label: str = "") -> list[float]:
    """Send ``count`` requests one after another; their latencies in ms (overhead measurements)."""
    latencies = []
    for i in tqdm(range(count), desc=label, unit="call", leave=False):
        request = requests[i % len(requests)]
        sent = time.perf_counter()
        call(request.query, request.documents)
        latencies.append((time.perf_counter() - sent) * 1000.0)
    return latencies


def summarise(outcomes: list[Outcome], concurrency: int, start: float, end: float) -> LevelResult:
    """A level's figures from its outcomes: the calls that succeeded between ``start`` and ``end`` (the window), the
    errors of all of them."""
    inside = [o for o in outcomes if o.ok and start <= o.ended <= end]
    errors = [f"{type(o.error).__name__}: {o.error}" for o in outcomes if not o.ok]
    window = end - start
    latencies = np.array([(o.ended - o.started) * 1000.0 for o in inside]) if inside else np.array([np.nan])
    pairs = sum(o.value for o in inside)
    p50, p95, p99 = (percentile(latencies, q) for q in (50, 95, 99))
    requests_per_s = concurrency / (float(latencies.mean()) / 1000.0) if inside else 0.0
    return LevelResult(
        concurrency=concurrency, requests=len(inside), pairs=pairs, window_s=round(window, 3),
        pairs_per_s=requests_per_s * pairs / max(len(inside), 1), requests_per_s=requests_per_s,
        window_pairs_per_s=pairs / window, p50_ms=p50, p95_ms=p95, p99_ms=p99,
        errors=len(errors), first_error=errors[0] if errors else None,
    )
