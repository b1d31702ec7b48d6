"""A request's pairs scored in chunks: sorted by length, cut into chunks of at most ``chunk_size`` pairs and
``max_chunk_tokens`` padded tokens (so that one chunk of long pairs is a short piece of work), each padded to its
own longest pair (the one padding rule, ara_reranker_model.inputs) and sent to the scorer concurrently, through
the model's dispatcher (dispatch.py: interactive first, requests taking turns); the first failure cancels the
others (and their Triton calls), and chunks still waiting in the dispatcher are never sent."""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

import numpy as np

from ara_reranker_model.inputs import PAD_TOKEN_TYPE, padded_rows
from ara_reranker_server.core_types import Scorer
from ara_reranker_server.dispatch import Dispatcher
from ara_reranker_server.errors import DeadlineExceeded

__all__ = ["score_in_chunks", "chunks_of"]


def chunks_of(sorted_lengths: np.ndarray, chunk_size: int, max_chunk_tokens: int) -> list[slice]:
    """Consecutive runs of pairs sorted longest first: at most ``chunk_size`` pairs, and at most ``max_chunk_tokens``
    padded tokens (pairs x the run's first, longest, pair), but at least one pair each."""
    out, start, n = [], 0, len(sorted_lengths)
    while start < n:
        fits = max(1, max_chunk_tokens // max(int(sorted_lengths[start]), 1))
        stop = min(n, start + chunk_size, start + fits)
        out.append(slice(start, stop))
        start = stop
    return out


async def score_in_chunks(pairs: Sequence[Sequence[int]], scorer: Scorer, chunk_size: int, pad_id: int,
                          types: Sequence[Sequence[int]] | None, deadline: float, dispatcher: Dispatcher | None = None,
                          priority: str = "interactive", max_chunk_tokens: int = 1 << 62) -> np.ndarray:
    """Each pair's logit (float32, in ``pairs``' order); ``pairs`` are token ids, ``types`` their token type ids (sent
    to models that read them; None for the others)."""
    lengths = np.fromiter(map(len, pairs), dtype=np.int64, count=len(pairs))
    order = np.argsort(-lengths, kind="stable")
    logits = np.empty(len(pairs), dtype=np.float32)
    chunks = [order[s] for s in chunks_of(lengths[order], chunk_size, max_chunk_tokens)]
    request = object()  # this call's turn in the dispatcher

    async def run(members: np.ndarray) -> None:
        input_ids, mask = padded_rows([pairs[m] for m in members], pad_id)
        type_ids = padded_rows([types[m] for m in members], PAD_TOKEN_TYPE)[0] if types is not None else None

        async def call() -> np.ndarray:
            return await scorer.score(input_ids, mask, deadline, token_type_ids=type_ids, priority=priority)

        if dispatcher is None:
            logits[members] = await call()
            return
        try:
            logits[members] = await dispatcher.run(input_ids.size, priority, request, call, deadline - time.monotonic(),
                                                   whole=len(chunks) == 1)
        except TimeoutError:
            raise DeadlineExceeded("deadline exceeded while waiting for the model (queued behind other work)") from None

    if len(chunks) == 1:  # most requests: scored in this task, no task group to set up
        await run(chunks[0])
        return logits
    try:
        async with asyncio.TaskGroup() as group:
            for members in chunks:
                group.create_task(run(members))
    except ExceptionGroup as failed:
        raise _first_leaf(failed) from None
    return logits


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first real error of a failed TaskGroup (the others were cancelled because of it)."""
    for exc in group.exceptions:
        return _first_leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
    return group
