"""Small helpers shared by several test modules."""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import grpc
import numpy as np

from ara_reranker_client import RerankerError
from ara_reranker_model.inputs import padded_rows
from ara_reranker_server.launcher.triton_launcher import MODEL_REPOSITORY

PAD_ID = 1  # XLM-R <pad>; padding ids are never read by the model, only the mask decides


def padded(rows: list[list[int]], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token rows to ``width`` (default: the longest row): INT64 (input_ids, attention_mask),
    as the gateway pads a chunk."""
    return padded_rows(rows, PAD_ID, width)


def code_of(call) -> grpc.StatusCode:
    """The gRPC status a client call ends with (OK when it returns)."""
    try:
        call()
    except RerankerError as exc:
        return exc.code
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def rerank_until_served(client, query: str, documents: list[str], within_s: float, each_try: Callable[[], None] = lambda: None,
                        detail: Callable[[], str] = lambda: "") -> tuple[list, Counter, float]:
    """Rerank (raw scores) until a call succeeds, for at most ``within_s``, calling ``each_try()`` before each call:
    the results, the codes of the calls that failed meanwhile, and the seconds it took. AssertionError with the
    codes and ``detail()`` when none succeeds in time."""
    codes: Counter = Counter()
    started = time.monotonic()
    while True:
        assert time.monotonic() - started < within_s, f"not served within {within_s:.0f}s: {dict(codes)}\n{detail()}"
        each_try()
        try:
            results = client.rerank(query, documents, raw_scores=True)
        except RerankerError as exc:
            codes[exc.code.name] += 1
            time.sleep(0.2)
            continue
        return results, codes, time.monotonic() - started


# Dynamic-batcher settings the shipped configs leave out (docs/api.md "Priorities"), as a test adds them.
_BATCHER_ADDITIONS = {
    "max_queue_size": "default_queue_policy {{ max_queue_size: {} }}",
    "priority_levels": "priority_levels: {}",
    "default_priority_level": "default_priority_level: {}",
}


def repository_copy(target: Path, **settings: int) -> Path:
    """A copy of the model repository whose CPU config sets e.g. max_batch_size or max_queue_delay_microseconds to
    the given values, or adds a dynamic-batcher setting the config leaves out (max_queue_size, priority_levels,
    default_priority_level)."""
    repository = target / "repository"
    shutil.copytree(MODEL_REPOSITORY, repository)
    config = repository / "ara_reranker/configs/cpu.pbtxt"
    text = config.read_text()
    for key, value in settings.items():
        text, count = re.subn(rf"\b{key}: \d+", f"{key}: {value}", text)
        if count == 0 and key in _BATCHER_ADDITIONS:
            line = "  " + _BATCHER_ADDITIONS[key].format(value) + "\n"
            text, count = re.subn(r"dynamic_batching \{\n", lambda m, line=line: m.group(0) + line, text)
        assert count == 1, key
    config.write_text(text)
    return repository


# Scores of the same pair from two calls may differ by float noise: Triton batches the calls' chunks
# differently (other padding widths, other kernels), ~1e-7 on scores, ~1e-6 on logits.
SAME_SCORE = 1e-5


def assert_same_ranking(got: list[tuple[int, float]], expected: list[tuple[int, float]], top: int | None = None) -> None:
    """``got`` (index, score) best first is ``expected``'s ranking cut to ``top`` (default: all of it), up to
    float noise: the same number of results, each score within SAME_SCORE of expected's for that index,
    best first, and no document left out that expected scored clearly above one kept."""
    want = dict(expected)
    assert len(got) == (len(expected) if top is None else min(top, len(expected))), (got, expected)
    assert len({i for i, _ in got}) == len(got)
    for index, score in got:
        assert abs(score - want[index]) <= SAME_SCORE, (index, score, want[index])
    scores = [s for _, s in got]
    assert all(a >= b - SAME_SCORE for a, b in zip(scores, scores[1:])), scores
    kept = {i for i, _ in got}
    floor = min(want[i] for i in kept)
    assert all(want[i] <= floor + SAME_SCORE for i in want if i not in kept)
