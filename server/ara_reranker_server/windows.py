"""TRUNCATION_SPLIT: a long document scored as overlapping windows, ranked by its best one.

A document's windows are exactly the pairs transformers returns for ``tokenizer(query, document,
truncation="only_second", max_length=window_tokens, stride=overlap, return_overflowing_tokens=True)``:
the document's tokens cut into parts of ``room`` tokens (what a window holds beside the query and the
special tokens), each starting ``room - overlap`` tokens after the previous one, the last one the first
that reaches the document's end. ``tokenizers``' ``Encoding.truncate(room, stride)`` computes exactly
these parts (transformers calls the same code); each part is then joined to the query by the model's
post-processor, as transformers does (token type ids included).

Only the first ``max_windows`` windows are scored; a document with more is counted as truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ara_reranker_server.errors import InvalidRequest

__all__ = ["DEFAULT_MAX_WINDOWS", "DEFAULT_OVERLAP_TOKENS", "Split", "Windows", "Window", "resolve", "best_rows",
           "span"]

# As Cohere's max_chunks_per_doc.
DEFAULT_MAX_WINDOWS = 10
# Tokens each window repeats from the previous one, unless the request says: 128, or a quarter of the
# document tokens a window holds when that is less (small windows).
DEFAULT_OVERLAP_TOKENS = 128


@dataclass(frozen=True)
class Split:
    """A request's TRUNCATION_SPLIT parameters, as given (None: the default)."""

    window_tokens: int | None = None
    overlap_tokens: int | None = None
    max_windows: int | None = None


@dataclass(frozen=True)
class Windows:
    """The windows of one request's documents: ``room`` document tokens each, ``overlap`` of them
    repeated from the previous window, at most ``max_windows`` per document."""

    window_tokens: int
    room: int
    overlap: int
    max_windows: int

    @property
    def tokens_needed(self) -> int:
        """Document tokens the first ``max_windows`` windows cover."""
        return self.room + (self.max_windows - 1) * (self.room - self.overlap)


@dataclass(frozen=True)
class Window:
    """A document's window: its position among the document's windows and the characters it covers
    (``document[start_char:end_char]``, Python string indices; empty for a document with no tokens)."""

    index: int
    start_char: int
    end_char: int


def resolve(split: Split, max_length: int, fixed_tokens: int, max_windows_limit: int) -> Windows:
    """The request's windows, defaults filled in and checked against the model's ``max_length``, the tokens
    every window has besides the document's (``fixed_tokens``: the query and the special tokens, or a causal-LM
    reranker's whole prompt, whose suffix every window keeps) and the ``max_windows_per_request`` setting."""
    window_tokens = max_length if split.window_tokens is None else split.window_tokens
    if not 0 < window_tokens <= max_length:
        raise InvalidRequest(f"window_tokens={window_tokens} must be between 1 and the model's max input length {max_length}")
    max_windows = DEFAULT_MAX_WINDOWS if split.max_windows is None else split.max_windows
    if not 0 < max_windows <= max_windows_limit:
        raise InvalidRequest(f"max_windows={max_windows} must be between 1 and max_windows_per_request={max_windows_limit}")
    room = window_tokens - fixed_tokens
    if room < 1:
        raise InvalidRequest(
            f"the query and the special tokens (or the prompt) make {fixed_tokens} tokens; a window of "
            f"window_tokens={window_tokens} must hold them and at least one document token"
        )
    overlap = min(DEFAULT_OVERLAP_TOKENS, room // 4) if split.overlap_tokens is None else split.overlap_tokens
    if overlap >= room:
        raise InvalidRequest(
            f"window_overlap_tokens={overlap} must be less than the {room} document tokens a window of "
            f"{window_tokens} tokens holds beside this query"
        )
    return Windows(window_tokens, room, overlap, max_windows)


def span(part, index: int, lead: int = 0) -> Window:
    """The window of a document's part (its encoding), with the characters its tokens cover; ``lead``: characters
    the tokenized text has before the document (a causal-LM prompt's, prompts.py), not the document's."""
    offsets = part.offsets
    if not offsets:
        return Window(index, 0, 0)
    return Window(index, max(0, offsets[0][0] - lead), max(0, offsets[-1][1] - lead))


def best_rows(logits: np.ndarray, owners: np.ndarray, documents: int) -> np.ndarray:
    """For each document, the row of its best window: the highest logit (compared in float64), equal
    logits keeping the lower window. ``owners[row]`` is the row's document; a document's rows are
    consecutive, in window order."""
    rows = np.lexsort((np.arange(len(owners)), -np.asarray(logits, dtype=np.float64), owners))
    first = np.ones(len(rows), dtype=bool)
    first[1:] = owners[rows][1:] != owners[rows][:-1]
    best = rows[first]
    assert len(best) == documents, "every document has at least one window"
    return best
