"""The scorer behind model.py (ara_reranker_model.scoring) on a stand-in engine: no Triton, no torch.

What model.py relies on: a bad request is refused with a message of its own before anything runs; every row of
every request comes back to its own (request, row), whatever the sorting and micro-batching; each micro-batch is
padded only to its own longest row and fits the token budget; a failed micro-batch fails only the rows it held.
Parity with the real model is held by tests/test_triton_model.py and tests/test_engines.py.
"""

from __future__ import annotations

import ast
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import ara_reranker_model
from ara_reranker_model.scoring import Batching, CrossEncoderScorer, MicroBatch, RequestError, RequestRows, scatter

pytestmark = pytest.mark.unit  # starts no process: make test-unit

VOCAB, POSITIONS, PAD = 1000, 66, 1  # an XLM-R-like stand-in: 64 usable positions (pad id + 1 reserved)


class _Config(SimpleNamespace):
    def to_dict(self) -> dict:
        return dict(vars(self))


class SummingEngine:
    """A stand-in engine whose logit of a row is the sum of its real tokens' ids (its padding masked out), so that
    every row's logit says which row it is; records each pass's arrays, and fails a pass holding ``poison``."""

    def __init__(self, type_vocab_size: int = 1, poison: int | None = None) -> None:
        self.config = _Config(model_type="xlm-roberta", vocab_size=VOCAB, pad_token_id=PAD, num_labels=1,
                              max_position_embeddings=POSITIONS, type_vocab_size=type_vocab_size)
        self.takes_token_type_ids = type_vocab_size > 1
        self.poison = poison
        self.passes: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._lock = threading.Lock()

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None):
        with self._lock:
            self.passes.append((input_ids, attention_mask, token_type_ids))
        if self.poison is not None and (input_ids == self.poison).any():
            raise RuntimeError("CUDA out of memory")
        return (input_ids * attention_mask).sum(axis=1).astype(np.float32)


def scorer(engine: SummingEngine | None = None, max_batch_tokens: int = 64, workers: int = 1) -> CrossEncoderScorer:
    return CrossEncoderScorer(engine or SummingEngine(), Batching(max_batch_tokens, overhead_tokens=4, workers=workers))


def arrays(rows: list[list[int]], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    width = width or max(map(len, rows))
    ids, mask = np.full((len(rows), width), PAD, np.int64), np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


# ------------------------------------------------------------------------------------------- validation
def test_padding_is_stripped_from_each_row():
    ids, mask = arrays([[5, 6, 7], [8]], width=6)
    ids[mask == 0] = 999  # whatever sits under a 0 mask is ignored
    rows = scorer().request_rows(ids, mask)
    assert [row.tolist() for row in rows.ids] == [[5, 6, 7], [8]] and rows.types is None


def _bad() -> dict[str, tuple[tuple, str]]:
    ids, mask = arrays([[0, 100, 200, 2], [0, 300, 2]])
    left, holes, empty, too_big, negative = mask[:, ::-1].copy(), mask.copy(), mask.copy(), ids.copy(), ids.copy()
    holes[0, 1] = 0
    empty[1] = 0
    too_big[0, 2] = VOCAB
    negative[1, 1] = -5
    long_ids, long_mask = arrays([[0] * 64, [0] * 65])
    return {
        "no mask": ((ids, None), "both input_ids and attention_mask are required"),
        "shapes differ": ((ids, mask[:, :3]), r"input_ids \[2, 4\] and attention_mask \[2, 3\] must be equal \[rows, length\]"),
        "one dimension": ((ids[0], mask[0]), r"input_ids \[4\] and attention_mask \[4\] must be equal"),
        "zero length": ((ids[:, :0], mask[:, :0]), r"request has no tokens: shape \[2, 0\]"),
        "left padding": ((ids, left), r"attention_mask must be 1 for each row's tokens then 0 \(right padding\)"),
        "a hole": ((ids, holes), "right padding"),
        "an empty row": ((ids, empty), "row 1 has no tokens"),
        "too long": ((long_ids, long_mask), "row 1 has 65 tokens; the model takes at most 64"),
        "beyond the vocabulary": ((too_big, mask), rf"input_ids must lie in \[0, {VOCAB}\), got \[0, {VOCAB}\]"),
        "negative": ((negative, mask), r"input_ids must lie in \[0, 1000\), got \[-5, 200\]"),
    }


@pytest.mark.parametrize("case", list(_bad()))
def test_a_bad_request_is_refused_saying_what_is_wrong(case):
    given, message = _bad()[case]
    with pytest.raises(RequestError, match=message):
        scorer().request_rows(*given)


def test_token_types_are_required_by_a_model_that_reads_them_and_checked_when_sent():
    bert = scorer(SummingEngine(type_vocab_size=2))
    ids, mask = arrays([[5, 6, 7], [8]])
    with pytest.raises(RequestError, match=r"token_type_ids is required: this model reads token types \(type_vocab_size=2\)"):
        bert.request_rows(ids, mask)
    with pytest.raises(RequestError, match=r"token_type_ids \[2, 2\] must have input_ids' shape \[2, 3\]"):
        bert.request_rows(ids, mask, np.zeros((2, 2), np.int64))
    with pytest.raises(RequestError, match=r"token_type_ids must lie in \[0, 2\), got \[2, 2\]"):
        bert.request_rows(ids, mask, mask * 2)
    assert [t.tolist() for t in bert.request_rows(ids, mask, mask).types] == [[1, 1, 1], [1]]
    # A model with one type ignores them, once they are valid.
    assert scorer().request_rows(ids, mask, np.zeros_like(ids)).types is None
    with pytest.raises(RequestError, match=r"must lie in \[0, 1\)"):
        scorer().request_rows(ids, mask, mask)


@pytest.mark.parametrize("field, value, message", [
    ("max_batch_tokens", 0, "max_batch_tokens must be > 0, got 0"),
    ("overhead_tokens", -1, "batch_overhead_tokens must be >= 0, got -1"),
    ("workers", -1, r"forward_workers must be >= 0 \(0: one per core\), got -1"),
])
def test_batching_out_of_range_is_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        Batching(**({"max_batch_tokens": 64} | {field: value}))
    parameters = {"overhead_tokens": "batch_overhead_tokens", "workers": "forward_workers"}
    if field in parameters:
        with pytest.raises(ValueError, match=message):
            Batching.from_parameters(64, {parameters[field]: str(value)})


# ---------------------------------------------------------------------------------------------- scoring
def _requests(rng: np.random.Generator, count: int) -> dict[int, RequestRows]:
    """``count`` requests of 1-6 rows of 1-40 ids each (keys with gaps, as model.py's valid requests)."""
    return {3 * k: RequestRows([rng.integers(2, VOCAB, size=rng.integers(1, 41)) for _ in range(rng.integers(1, 7))])
            for k in range(count)}


@pytest.mark.parametrize("workers", [1, 3])
def test_every_row_comes_back_to_its_own_request_in_budgeted_micro_batches(workers):
    engine = SummingEngine()
    requests = _requests(np.random.default_rng(workers), 12)
    seen: list[MicroBatch] = []
    batches = scorer(engine, max_batch_tokens=64, workers=workers).score(requests, seen.append)

    assert sorted(map(id, seen)) == sorted(map(id, batches)) and len(batches) == len(engine.passes) > 1
    got = {owner: logit for batch in batches for owner, logit in zip(batch.owners, batch.logits)}
    assert got == {(k, i): float(row.sum()) for k, request in requests.items() for i, row in enumerate(request.ids)}
    assert all(batch.error is None and batch.seconds >= 0 for batch in batches)
    for ids, mask, types in engine.passes:
        assert ids.size <= 64 or len(ids) == 1  # the budget, a longer row alone
        assert mask[:, -1].any() and types is None  # padded only to its own longest row
    assert sum(b.padded_tokens for b in batches) == sum(ids.size for ids, _, _ in engine.passes)
    assert sum(b.real_tokens for b in batches) == sum(len(row) for r in requests.values() for row in r.ids)


def test_a_failed_micro_batch_fails_only_the_rows_it_held():
    engine = SummingEngine(poison=7)
    requests = {0: RequestRows([np.array([2, 3]), np.array([7] * 40)]), 1: RequestRows([np.array([4, 5])])}
    batches = scorer(engine, max_batch_tokens=64).score(requests)
    failed = [b for b in batches if b.error is not None]
    assert [b.owners for b in failed] == [[(0, 1)]] and failed[0].logits is None
    assert isinstance(failed[0].error, RuntimeError) and failed[0].padded_tokens == 0
    scored = {owner: logit for b in batches if b.error is None for owner, logit in zip(b.owners, b.logits)}
    assert scored == {(0, 0): 5.0, (1, 0): 9.0}
    with pytest.raises(RuntimeError, match="out of memory"):
        scatter(batches, [2, 1])


def test_token_types_are_padded_with_the_padding_type_and_passed_on():
    engine = SummingEngine(type_vocab_size=2)
    requests = {0: RequestRows([np.array([5, 6, 7]), np.array([8])], [np.array([0, 1, 1]), np.array([1])])}
    scorer(engine, max_batch_tokens=64).score(requests)
    [(_, mask, types)] = engine.passes
    assert types.tolist() == [[0, 1, 1], [1, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_scatter_gives_each_request_its_logits_in_row_order_and_nothing_runs_for_no_rows():
    s = scorer()
    rows = [[[5, 6], [7], [8, 9, 10]], [[11]]]
    logits = scatter(s.score({k: RequestRows(r) for k, r in enumerate(rows)}), [3, 1])
    assert [x.tolist() for x in logits] == [[11.0, 7.0, 27.0], [11.0]] and logits[0].dtype == np.float32
    assert len(s.engine.passes) == 1  # four rows of at most 3 tokens: one pass is the cheapest
    assert s.score({}) == [] and len(s.engine.passes) == 1


def test_warm_up_runs_one_small_pass_and_close_lets_the_engine_go():
    s = scorer(workers=2)
    s.warm_up()
    [(ids, mask, types)] = s.engine.passes
    assert ids.shape == mask.shape == types.shape == (2, 16) and (ids == PAD + 4).all()
    s.close()
    assert s.engine is None


# ------------------------------------------------------------------------------------------------ imports
@pytest.mark.parametrize("module", ["scoring", "batching", "engines"])
def test_the_scorer_imports_only_numpy_and_the_standard_library_until_an_engine_loads(module):
    """Triton's image and the gateway's share this package: torch, transformers and ONNX Runtime are imported inside
    the engines when one is loaded, never when the module is."""
    tree = ast.parse((Path(ara_reranker_model.__file__).parent / f"{module}.py").read_text())
    tops = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    tops |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert tops - set(sys.stdlib_module_names) - {"__future__"} <= {"numpy", "ara_reranker_model"}, tops
