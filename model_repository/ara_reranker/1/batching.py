"""How model.py cuts length-sorted rows into micro-batches and runs them (also used by the benchmarks).

Rows arrive sorted by length, longest first. A micro-batch is a contiguous slice, padded to its first
(longest) row, so it costs ``rows x width`` padded tokens plus a fixed cost per forward pass (kernel
launches, per-layer framework overhead), expressed in tokens as ``overhead_tokens``. ``micro_batches``
returns the partition of least total cost whose every slice fits ``max_batch_tokens`` (``rows x width``),
by dynamic programming over the cut points: O(n^2) in numpy, well under a millisecond for the few hundred
rows one execute() call holds.

With ``overhead_tokens`` large it packs full batches (what GPUs want); small, it keeps rows of unlike
lengths apart (what CPUs want, where a forward pass costs nearly its tokens alone).

``ForwardPool`` runs the micro-batches of one execute() call on several threads at once, largest first.
On CPU, single-threaded forward passes side by side beat one multi-threaded pass: no barrier between
the threads of each operator, full speed at any batch size, and a thread preempted by the gateway or
the tokenizer delays only its own micro-batch. The engines release the GIL while they compute.

``pad_rows`` is the one definition of how unpadded token rows become a model's input arrays.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

__all__ = ["PAD_TOKEN_TYPE", "micro_batches", "pad_rows", "ForwardPool"]

PAD_TOKEN_TYPE = 0  # token type of padding positions (as transformers' tokenizers pad); masked out anyway

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


def pad_rows(
    rows: Sequence[np.ndarray], pad_id: int, type_rows: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Right-pad unpadded token rows to the longest of them: int64 ``input_ids`` (``pad_id`` after each
    row), ``attention_mask`` (1 over each row's tokens, then 0) and, when ``type_rows`` are given,
    ``token_type_ids`` (``PAD_TOKEN_TYPE`` after each row); None in its place otherwise."""
    widths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    mask = np.arange(int(widths.max()))[None, :] < widths[:, None]
    ids = np.full(mask.shape, pad_id, dtype=np.int64)
    ids[mask] = np.concatenate(rows)
    types = None
    if type_rows is not None:
        types = np.full(mask.shape, PAD_TOKEN_TYPE, dtype=np.int64)
        types[mask] = np.concatenate(type_rows)
    return ids, mask.astype(np.int64), types


class ForwardPool:
    """Runs one function over many micro-batches on ``workers`` threads (1: in the caller's thread)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="forward") if workers > 1 else None

    def map(self, fn: Callable[[T], R], items: Sequence[T], cost: Callable[[T], float]) -> Iterator[tuple[T, R]]:
        """(item, fn(item)) for every item, largest ``cost`` first (so that the threads finish together);
        an exception raised by ``fn`` is returned in place of its result, so one item cannot sink the others."""
        ordered = sorted(items, key=cost, reverse=True)

        def guarded(item: T):
            try:
                return fn(item)
            except Exception as exc:  # handed back to the caller, which fails only this micro-batch
                return exc

        results = map(guarded, ordered) if self._executor is None else self._executor.map(guarded, ordered)
        return zip(ordered, results)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
