"""A cross-encoder scoring token rows: what the Triton model computes, importable without Triton.

One ``score`` call makes one pass over every request it is handed: the rows (each request's arrays validated
by ``request_rows``, padding stripped) are sorted by length, longest first, across all requests, cut into
micro-batches under a token budget with the least padding (batching.py), each padded only to its own longest
row (inputs.py's rule) and run by the forward pool, several side by side on CPU. Each micro-batch's logits go
back to their (request, row) owners as soon as it finishes, through a callback: a caller can answer a request
once its last row is scored, and a failed micro-batch (out of memory) fails only the requests it held.

model.py adapts this to Triton (its tensors, responses and metrics); the benchmarks run it in-process.
numpy and the standard library at import: the engine's framework (torch, ONNX Runtime) is imported when an
engine is loaded (engines.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ara_reranker_model.batching import ForwardPool, plan
from ara_reranker_model.engines import Engine, load_engine
from ara_reranker_model.families import is_causal_lm
from ara_reranker_model.inputs import PAD_TOKEN_TYPE, padded_rows
from ara_reranker_model.limits import max_input_length, max_row_length, type_vocab_size

__all__ = ["Batching", "CrossEncoderScorer", "MicroBatch", "RequestError", "RequestRows", "scatter"]


class RequestError(ValueError):
    """A request whose tensors cannot be scored; answered with INVALID_ARG, the batch goes on."""


@dataclass(frozen=True)
class Batching:
    """How the rows of one pass are cut into micro-batches and run (the model's parameters of the same names)."""

    max_batch_tokens: int  # padded tokens (rows x longest row) one micro-batch may hold; a longer row goes alone
    overhead_tokens: int = 0  # ``batch_overhead_tokens``: the fixed cost of one forward pass, in tokens
    workers: int = 1  # ``forward_workers``: micro-batches run side by side (0: one per core)
    # ``low_priority_batch_tokens``: micro-batches of more padded tokens run on lower-priority threads (0: none do)
    low_priority_tokens: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_tokens <= 0:
            raise ValueError(f"max_batch_tokens must be > 0, got {self.max_batch_tokens}")
        if self.overhead_tokens < 0:
            raise ValueError(f"batch_overhead_tokens must be >= 0, got {self.overhead_tokens}")
        if self.workers < 0:
            raise ValueError(f"forward_workers must be >= 0 (0: one per core), got {self.workers}")
        if self.low_priority_tokens < 0:
            raise ValueError(f"low_priority_batch_tokens must be >= 0 (0: off), got {self.low_priority_tokens}")

    @classmethod
    def from_parameters(cls, max_batch_tokens: int, parameters: Mapping[str, str]) -> Batching:
        """The batching a Triton config's ``parameters`` ask for (``max_batch_tokens`` read by config.limits)."""
        return cls(max_batch_tokens, int(parameters.get("batch_overhead_tokens", "0")),
                   int(parameters.get("forward_workers", "1")), int(parameters.get("low_priority_batch_tokens", "0")))


@dataclass(frozen=True, eq=False)  # arrays: identity, not value, equality
class RequestRows:
    """One request's rows, padding stripped: input_ids, and token_type_ids when the model reads them."""

    ids: Sequence[Sequence[int]]  # numpy rows (model.py) or lists (a tokenizer's output)
    types: Sequence[Sequence[int]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class MicroBatch:
    """One forward pass: whose rows it held and their logits, or the error it met."""

    owners: list[tuple[int, int]]  # (request key, row index) of each row, in the order of ``logits``
    logits: np.ndarray | None  # float32 [rows]; None when the pass failed
    error: Exception | None  # e.g. out of memory: only the requests of these rows fail
    real_tokens: int  # the rows' tokens, padding left out
    padded_tokens: int = 0  # rows x longest row, as computed (0 when the pass failed)
    seconds: float = 0.0  # the forward pass alone, padding excluded


class CrossEncoderScorer:
    """Scores token rows with one engine, in length-sorted, token-budgeted micro-batches (see the module's doc)."""

    def __init__(self, engine: Engine, batching: Batching) -> None:
        """Score with ``engine`` (already loaded; ``load`` checks that it is a cross-encoder) cut by ``batching``."""
        config = engine.config.to_dict()
        self.engine = engine
        self.batching = batching
        # BERT-style cross-encoders mark the document with token type 1: without the tokenizer's types
        # their scores would silently differ from the model's, so requests to them must carry them.
        self.type_vocab_size = type_vocab_size(config)
        self.takes_token_types = engine.takes_token_type_ids
        self.vocab_size = int(engine.config.vocab_size)
        self.pad_id = int(engine.config.pad_token_id if engine.config.pad_token_id is not None else 0)
        # The hard limit; the gateway picks its own (the tokenizer's or the recipe's, or lower) and never sends more.
        self.max_length = max_row_length(config)
        self.pool = ForwardPool(batching.workers or len(os.sched_getaffinity(0)), batching.low_priority_tokens or None)

    @classmethod
    def load(cls, model_dir: Path | str, batching: Batching, *, engine: str = "torch", device: str = "cpu",
             dtype: str = "auto", num_threads: int = 0, **engine_options) -> CrossEncoderScorer:
        """The model of ``model_dir`` on the named engine (engines.load_engine, ``engine_options`` included).
        ValueError says what is wrong: the engine or dtype, a model that is neither a one-logit cross-encoder nor a
        causal-LM reranker (families.py), a tokenizer that allows more tokens than the position embeddings hold
        (limits.ModelLimitError)."""
        model_dir = Path(model_dir)
        loaded = load_engine(engine, model_dir, device, dtype, num_threads, **engine_options)
        if not is_causal_lm(loaded.config.to_dict()) and loaded.config.num_labels != 1:
            raise ValueError(f"{model_dir} has num_labels={loaded.config.num_labels}; a cross-encoder reranker has 1")
        max_input_length(model_dir)  # refuses a tokenizer that allows more than the positions hold
        return cls(loaded, batching)

    @classmethod
    def from_parameters(cls, model_dir: Path | str, max_batch_tokens: int, parameters: Mapping[str, str],
                        device: str = "cpu") -> CrossEncoderScorer:
        """The scorer a Triton config's ``parameters`` ask for (engine, dtype, num_threads, batching) on ``device``;
        ValueError as ``load``, or for a batching parameter out of range, checked before the model is loaded."""
        batching = Batching.from_parameters(max_batch_tokens, parameters)
        return cls.load(model_dir, batching, engine=parameters.get("engine", "torch"), device=device,
                        dtype=parameters.get("dtype", "auto"), num_threads=int(parameters.get("num_threads", "0")))

    def warm_up(self) -> None:
        """One small forward pass: a server should report ready only once the model has really run."""
        ones = np.ones((2, 16), dtype=np.int64)
        self.engine.forward(np.full((2, 16), self.pad_id + 4, dtype=np.int64), ones, ones)

    def request_rows(self, input_ids: np.ndarray | None, attention_mask: np.ndarray | None,
                     token_type_ids: np.ndarray | None = None) -> RequestRows:
        """One request's [rows, length] arrays (None: absent), right-padded, as rows without their padding;
        RequestError says what is wrong with them."""
        ids, lengths, real = self._checked_tokens(input_ids, attention_mask)
        types = self._checked_token_types(token_type_ids, ids.shape, real)
        return RequestRows([ids[i, :n] for i, n in enumerate(lengths)],
                           None if types is None else [types[i, :n] for i, n in enumerate(lengths)])

    def _checked_tokens(self, ids: np.ndarray | None, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, row lengths, where the real tokens are), or RequestError."""
        if ids is None or mask is None:
            raise RequestError("both input_ids and attention_mask are required")
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise RequestError(f"input_ids {list(ids.shape)} and attention_mask {list(mask.shape)} must be equal [rows, length]")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise RequestError(f"request has no tokens: shape {list(ids.shape)}")
        lengths = mask.sum(axis=1)
        expected = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        if not np.array_equal(mask, expected):
            raise RequestError("attention_mask must be 1 for each row's tokens then 0 (right padding)")
        if lengths.min() == 0:
            raise RequestError(f"row {int(lengths.argmin())} has no tokens")
        if lengths.max() > self.max_length:
            raise RequestError(f"row {int(lengths.argmax())} has {int(lengths.max())} tokens; the model takes at most {self.max_length}")
        real = ids[expected]
        if real.min() < 0 or real.max() >= self.vocab_size:
            raise RequestError(f"input_ids must lie in [0, {self.vocab_size}), got [{int(real.min())}, {int(real.max())}]")
        return ids, lengths, expected

    def _checked_token_types(self, types: np.ndarray | None, shape: tuple[int, ...], real: np.ndarray) -> np.ndarray | None:
        """The request's token_type_ids, checked; None when the model reads none (then they may be absent)."""
        if types is None:
            if self.takes_token_types:
                raise RequestError(
                    f"token_type_ids is required: this model reads token types (type_vocab_size={self.type_vocab_size}); "
                    "send the tokenizer's, right-padded like input_ids"
                )
            return None
        if types.shape != shape:
            raise RequestError(f"token_type_ids {list(types.shape)} must have input_ids' shape {list(shape)}")
        values = types[real]
        if values.min() < 0 or values.max() >= self.type_vocab_size:
            raise RequestError(
                f"token_type_ids must lie in [0, {self.type_vocab_size}), got [{int(values.min())}, {int(values.max())}]"
            )
        return types if self.takes_token_types else None

    def score(self, requests: Mapping[int, RequestRows],
              on_batch: Callable[[MicroBatch], None] | None = None) -> list[MicroBatch]:
        """Every row of ``requests`` (key -> rows; token types required when the model reads them) forwarded in
        length-sorted micro-batches, smallest first. ``on_batch`` gets each micro-batch as it finishes, in the
        thread that ran it; a failed one carries its error, and the others still run. Returns them all."""
        rows: list[np.ndarray] = []  # every row of every request
        type_rows: list[np.ndarray] | None = [] if self.takes_token_types else None  # their token_type_ids
        owners: list[tuple[int, int]] = []  # (request key, row index) of each entry in rows
        for key, request in requests.items():
            rows += request.ids
            owners += [(key, i) for i in range(len(request))]
            if type_rows is not None:
                type_rows += request.types
        if not rows:
            return []
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        order = np.argsort(-lengths, kind="stable")
        b = self.batching
        batches = [order[s] for s in plan(lengths[order], b.max_batch_tokens, b.overhead_tokens, self.pool.workers)]

        def forward(members: np.ndarray) -> tuple[np.ndarray, int, float]:
            ids, mask = padded_rows([rows[m] for m in members], self.pad_id)
            token_types = None if type_rows is None else padded_rows([type_rows[m] for m in members], PAD_TOKEN_TYPE)[0]
            started = time.perf_counter()
            return self.engine.forward(ids, mask, token_types), ids.size, time.perf_counter() - started

        finished: list[MicroBatch] = []  # list.append is atomic: the forward threads share it

        def done(members: np.ndarray, outcome) -> None:
            batch_owners, real = [owners[m] for m in members], int(lengths[members].sum())
            if isinstance(outcome, Exception):
                batch = MicroBatch(batch_owners, None, outcome, real)
            else:
                logits, size, seconds = outcome
                batch = MicroBatch(batch_owners, logits, None, real, size, seconds)
            finished.append(batch)
            if on_batch is not None:
                on_batch(batch)

        cost = lambda members: len(members) * int(lengths[members[0]])  # noqa: E731
        self.pool.map(forward, batches, cost, done)
        return finished

    def close(self) -> None:
        """Stop the forward threads and let the engine go."""
        self.pool.close()
        self.engine = None


def scatter(batches: Sequence[MicroBatch], rows: Sequence[int]) -> list[np.ndarray]:
    """The float32 logits of each request (``rows[k]`` rows for key ``k`` = 0, 1, ...) from its micro-batches;
    raises the error of the first that failed. For callers that want all logits at once (benchmarks)."""
    logits = [np.empty(n, dtype=np.float32) for n in rows]
    for batch in batches:
        if batch.error is not None:
            raise batch.error
        for (k, i), logit in zip(batch.owners, batch.logits):
            logits[k][i] = logit
    return logits
