"""How the scorer (scoring.py, behind model.py and the benchmarks) cuts length-sorted rows into micro-batches and runs them.

Rows arrive sorted by length, longest first. A micro-batch is a contiguous slice, padded to its first
(longest) row, so it costs ``rows x width`` padded tokens plus a fixed cost per forward pass (kernel
launches, per-layer framework overhead), expressed in tokens as ``overhead_tokens``. ``micro_batches``
returns the partition of least total cost whose every slice fits ``max_batch_tokens`` (``rows x width``),
by dynamic programming over the cut points: O(n^2) in numpy, well under a millisecond for the few hundred
rows one execute() call holds.

With ``overhead_tokens`` large it packs full batches (what GPUs want); small, it keeps rows of unlike
lengths apart (what CPUs want, where a forward pass costs nearly its tokens alone).

``ForwardPool`` runs the micro-batches of one execute() call on several threads at once, smallest first.
On CPU, single-threaded forward passes side by side beat one multi-threaded pass: no barrier between
the threads of each operator, full speed at any batch size, and a thread preempted by the gateway or
the tokenizer delays only its own micro-batch. The engines release the GIL while they compute.

Micro-batches above ``low_priority_cost`` (bulk work: long rows, large requests) run on threads of their own at a
lower CPU priority (``LOW_PRIORITY_NICE``, Linux, per thread). Where a second model instance serves a small request
at the same time, the kernel then runs the small one's pass first on a busy CPU instead of sharing the cores
evenly, and an idle CPU still runs the bulk work at full speed: the forward passes' share of the "fair by default"
rule (docs/api.md, priorities).

How the rows of a micro-batch are padded is inputs.py's rule, shared with the gateway.
"""

from __future__ import annotations

import bisect
import itertools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import numpy as np

__all__ = ["micro_batches", "spread", "plan", "ForwardPool", "LOW_PRIORITY_NICE", "lower_thread_priority"]

# The nice value of bulk work's threads: the gateway's tokenizing of large requests and the model's large
# micro-batches. +10 gives a thread about a tenth of a core's share beside one at nice 0 (CFS weights 110 : 1024).
LOW_PRIORITY_NICE = 10


def lower_thread_priority(nice: int = LOW_PRIORITY_NICE) -> None:
    """This thread's nice value raised to ``nice`` (Linux: per thread; elsewhere left alone, since setpriority would
    change the whole process). Raising needs no privilege; lowering it back would, so bulk work keeps threads of its own."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            pass

T = TypeVar("T")
R = TypeVar("R")


def micro_batches(sorted_lengths: np.ndarray, max_batch_tokens: int, overhead_tokens: int = 0) -> list[slice]:
    """Slices of ``sorted_lengths`` (non-increasing) covering it in order, each with rows x longest <=
    ``max_batch_tokens`` (a row longer than the budget goes alone), minimising padded tokens plus
    ``overhead_tokens`` per slice."""
    lengths = np.asarray(sorted_lengths, dtype=np.int64)
    n = len(lengths)
    if n == 0:
        return []
    best = np.zeros(n + 1, dtype=np.float64)  # best[j]: least cost of rows [0, j)
    cut = np.zeros(n + 1, dtype=np.int64)  # cut[j]: where the last slice of that best partition starts
    starts = np.arange(n, dtype=np.int64)
    for end in range(1, n + 1):
        rows = end - starts[:end]
        padded = rows * lengths[:end]
        cost = best[:end] + padded + overhead_tokens
        cost[(padded > max_batch_tokens) & (rows > 1)] = np.inf
        cut[end] = int(np.argmin(cost))
        best[end] = cost[cut[end]]
    slices = []
    end = n
    while end > 0:
        slices.append(slice(int(cut[end]), end))
        end = int(cut[end])
    return slices[::-1]


# Work too small to be worth another forward pass: a share is never cut below this many padded tokens.
MIN_SHARE_TOKENS = 1024


def spread(slices: list[slice], sorted_lengths: np.ndarray, workers: int) -> list[slice]:
    """``slices`` with the costliest cut into equal runs of rows until ``workers`` threads can share them
    evenly: none costs more than a ``2 * workers``-th of the whole (rows x width, at least MIN_SHARE_TOKENS),
    unless it is one row.

    Uniform traffic makes one or a few large micro-batches (rows of the same length gain nothing from being
    apart), which would leave cores idle while one thread runs them; cut, they run side by side. A run of
    a slice pads to its own first row, never wider than the slice did, so no padding is added: only a
    few more (cheap on CPU) passes."""
    if workers <= 1 or not slices:
        return slices
    lengths = np.asarray(sorted_lengths, dtype=np.int64)
    costs = [(s.stop - s.start) * int(lengths[s.start]) for s in slices]
    share = max(sum(costs) / (2 * workers), MIN_SHARE_TOKENS)
    out: list[slice] = []
    for s, cost in zip(slices, costs):
        pieces = min(s.stop - s.start, int(np.ceil(cost / share)))
        if pieces <= 1:
            out.append(s)
            continue
        bounds = np.linspace(s.start, s.stop, pieces + 1).round().astype(np.int64)
        out += [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return out


def plan(sorted_lengths: np.ndarray, max_batch_tokens: int, overhead_tokens: int, workers: int) -> list[slice]:
    """The micro-batches of one execute() call: the least-cost partition, spread over ``workers`` threads."""
    return spread(micro_batches(sorted_lengths, max_batch_tokens, overhead_tokens), sorted_lengths, workers)


class ForwardPool:
    """Runs one function over many micro-batches on ``workers`` threads: the caller's own and ``workers - 1``
    more (1: in the caller's thread alone). The caller works too rather than waiting: a lone micro-batch
    (a small request) runs without a thread hop at all. With ``low_priority_cost``, items costing more run on
    ``workers`` threads of their own at a lower CPU priority instead (see the module's doc)."""

    def __init__(self, workers: int, low_priority_cost: float | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.low_priority_cost = low_priority_cost
        self._executor = ThreadPoolExecutor(workers - 1, thread_name_prefix="forward") if workers > 1 else None
        self._low = None if low_priority_cost is None else ThreadPoolExecutor(
            workers, thread_name_prefix="forward-low", initializer=lower_thread_priority)

    def map(self, fn: Callable[[T], R], items: Sequence[T], cost: Callable[[T], float],
            done: Callable[[T, R], None] | None = None) -> list[tuple[T, R]]:
        """(item, fn(item)) for every item, taken smallest ``cost`` first by whichever thread is free; an exception
        raised by ``fn`` is returned in place of its result, so one item cannot sink the others. ``done(item,
        result)``, if given, is called as each item finishes, in the thread that ran it.

        Smallest first, with ``done`` answering each request as soon as its rows are scored: a small request batched
        with a large one's rows is answered after its own short micro-batches, not after the large ones. The gateway
        bounds a chunk's tokens, so the last, largest item keeps the threads' finishing times close."""
        ordered = sorted(items, key=cost)
        results: list = [None] * len(ordered)
        # ordered[:split] on the caller's threads, the rest (costlier than low_priority_cost) on the low ones.
        split = len(ordered) if self._low is None else bisect.bisect_right([cost(item) for item in ordered], self.low_priority_cost)

        def work(taken, end: int) -> None:
            while (i := next(taken)) < end:  # next() is atomic under the GIL: each item goes to one thread
                try:
                    results[i] = fn(ordered[i])
                except Exception as exc:  # handed back to the caller, which fails only this micro-batch
                    results[i] = exc
                if done is not None:
                    done(ordered[i], results[i])

        helpers = []
        if split < len(ordered):
            low_taken = itertools.count(split)
            helpers += [self._low.submit(work, low_taken, len(ordered)) for _ in range(min(self.workers, len(ordered) - split))]
        if split:
            taken = itertools.count()
            if self._executor is not None:
                helpers += [self._executor.submit(work, taken, split) for _ in range(min(self.workers, split) - 1)]
            work(taken, split)
        for helper in helpers:
            helper.result()
        return list(zip(ordered, results))

    def close(self) -> None:
        for executor in (self._executor, self._low):
            if executor is not None:
                executor.shutdown(wait=True)
