"""A request's pairs scored in chunks: sorted by length, cut into chunks of ``chunk_size`` pairs, each padded to its
own longest pair (the one padding rule, ara_reranker_model.inputs) and sent to the scorer concurrently; the first
failure cancels the others (and their Triton calls)."""

from __future__ import annotations

import asyncio
from typing import Sequence

import numpy as np

from ara_reranker_model.inputs import padded_rows
from ara_reranker_server.jobs import Scorer

__all__ = ["score_in_chunks"]


async def score_in_chunks(pairs: Sequence, scorer: Scorer, chunk_size: int, pad_id: int, with_types: bool,
                          deadline: float) -> np.ndarray:
    """Each pair's logit (float32, in ``pairs``' order); ``pairs`` are tokenizer encodings (``ids``, ``type_ids``)."""
    lengths = np.fromiter((len(pair.ids) for pair in pairs), dtype=np.int64, count=len(pairs))
    order = np.argsort(-lengths, kind="stable")
    logits = np.empty(len(pairs), dtype=np.float32)
    chunks = [order[start : start + chunk_size] for start in range(0, len(order), chunk_size)]

    async def run(members: np.ndarray) -> None:
        input_ids, mask = padded_rows([pairs[m].ids for m in members], pad_id)
        types = padded_rows([pairs[m].type_ids for m in members], 0)[0] if with_types else None
        logits[members] = await scorer.score(input_ids, mask, deadline, token_type_ids=types)

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
