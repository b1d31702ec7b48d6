"""Closed-loop load: ``concurrency`` clients, each sending its next request as soon as the last returns.

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

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from bench.workload import Request

__all__ = ["LevelResult", "run_level", "run_count"]

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


class _Clients:
    """The client threads of one level and what they recorded."""

    def __init__(self, call: Call, requests: Sequence[Request], concurrency: int, start_at: int) -> None:
        self.call, self.requests, self.concurrency = call, requests, concurrency
        self.next = itertools.count(start_at)  # shared: clients walk the workload in one order
        self.records: list[tuple[float, float, int]] = []  # (sent, answered, pairs)
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(concurrency)]

    def _loop(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                request = self.requests[next(self.next) % len(self.requests)]
            sent = time.perf_counter()
            try:
                self.call(request.query, request.documents)
            except Exception as exc:  # counted and reported; a benchmark must not hide failures
                with self.lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)
                continue
            with self.lock:
                self.records.append((sent, time.perf_counter(), len(request.documents)))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def done(self) -> int:
        with self.lock:
            return len(self.records) + len(self.errors)

    def finish(self, timeout_s: float) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout_s)


def run_level(call: Call, requests: Sequence[Request], concurrency: int, duration_s: float, *,
              start_at: int = 0, ramp_timeout_s: float = 180.0, max_window_s: float = 60.0, label: str = "") -> LevelResult:
    """Measure one concurrency level (see the module docstring); shows a progress bar."""
    clients = _Clients(call, requests, concurrency, start_at)
    started = time.perf_counter()
    clients.start()
    ramp_deadline = time.monotonic() + ramp_timeout_s
    while clients.done() < concurrency and time.monotonic() < ramp_deadline:
        time.sleep(0.01)
    window_start = time.perf_counter()
    duration_s = min(max(duration_s, 3 * (window_start - started)), max(max_window_s, duration_s))
    with tqdm(total=round(duration_s, 1), desc=f"{label} c={concurrency}", unit="s", leave=False,
              bar_format="{desc}: {bar} {n:.0f}/{total:.0f}s {postfix}") as bar:
        while (elapsed := time.perf_counter() - window_start) < duration_s:
            time.sleep(min(0.5, duration_s - elapsed))
            bar.n = min(round(time.perf_counter() - window_start, 1), bar.total)
            bar.set_postfix_str(f"{clients.done()} calls")
    window_end = time.perf_counter()
    clients.finish(timeout_s=ramp_timeout_s)
    return _summarise(clients, concurrency, window_start, window_end)


def run_count(call: Call, requests: Sequence[Request], count: int, *, label: str = "") -> list[float]:
    """Send ``count`` requests one after another; their latencies in ms (overhead measurements)."""
    latencies = []
    for i in tqdm(range(count), desc=label, unit="call", leave=False):
        request = requests[i % len(requests)]
        sent = time.perf_counter()
        call(request.query, request.documents)
        latencies.append((time.perf_counter() - sent) * 1000.0)
    return latencies


def _summarise(clients: _Clients, concurrency: int, start: float, end: float) -> LevelResult:
    inside = [(s, e, n) for s, e, n in clients.records if start <= e <= end]
    window = end - start
    latencies = np.array([(e - s) * 1000.0 for s, e, _ in inside]) if inside else np.array([np.nan])
    pairs = sum(n for _, _, n in inside)
    p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99))
    requests_per_s = concurrency / (float(latencies.mean()) / 1000.0) if inside else 0.0
    return LevelResult(
        concurrency=concurrency, requests=len(inside), pairs=pairs, window_s=round(window, 3),
        pairs_per_s=requests_per_s * pairs / max(len(inside), 1), requests_per_s=requests_per_s,
        window_pairs_per_s=pairs / window, p50_ms=p50, p95_ms=p95, p99_ms=p99,
        errors=len(clients.errors), first_error=clients.errors[0] if clients.errors else None,
    )
