"""A bounded cache of the model's answers for (query, document) pairs: RAG traffic repeats them (retries,
pagination, popular documents), and a cached pair need not go to Triton again.

Keyed by a 128-bit BLAKE2b digest of everything the answer depends on: the model's served name, the way
the document is cut (truncation, direction, max document tokens, windows, max input length), the query
and the document. The value is what the model said of the pair: its logit (of its best window with
TRUNCATION_SPLIT, and which window), how many tokens it took, whether it was cut, how many windows
were scored. Parity is untouched: a cached logit is the model's own, from the call that computed it.

Least-recently-used entries go first once the cache holds ``max_bytes`` (a fixed cost per entry:
no texts are kept); an entry older than ``ttl_s`` is a miss. Used from the event loop only (no lock).
Models whose weights change under the same name keep stale entries until their TTL: restart the gateway
(or set the TTL) when you swap weights in place.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["ScoreCache", "CachedPair", "ENTRY_BYTES"]

# What one entry costs in memory, measured (tests/test_score_cache.py): the 16-byte digest key, the
# CachedPair, and the OrderedDict's slot.
ENTRY_BYTES = 400


@dataclass(frozen=True, slots=True)
class CachedPair:
    logit: float
    tokens: int  # tokens of the pair (of all its windows with TRUNCATION_SPLIT)
    truncated: bool
    windows: int  # pairs scored for the document (1, or its windows)
    window: tuple[int, int, int] | None  # TRUNCATION_SPLIT: the best window (index, start_char, end_char)
    stored_at: float


class ScoreCache:
    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        self.max_entries = max(0, max_bytes // ENTRY_BYTES)
        self.ttl_s = ttl_s
        self._entries: OrderedDict[bytes, CachedPair] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(scope: str, query: str, document: str) -> bytes:
        """``scope``: the model and the cut (``Reranker`` builds it); then the query and the document."""
        h = hashlib.blake2b(digest_size=16)
        for part in (scope, query, document):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return h.digest()

    def get(self, key: bytes) -> CachedPair | None:
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry.stored_at <= self.ttl_s:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        if entry is not None:
            del self._entries[key]
        self.misses += 1
        return None

    def put(self, key: bytes, logit: float, tokens: int, truncated: bool, windows: int,
            window: tuple[int, int, int] | None) -> None:
        if not self.max_entries:
            return
        self._entries[key] = CachedPair(logit, tokens, truncated, windows, window, time.monotonic())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
