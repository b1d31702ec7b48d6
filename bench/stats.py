"""The latency figures every benchmark reports, computed one way: percentiles of a list of latencies in ms."""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["percentile", "p50_p99_ms"]


def percentile(values: Iterable[float], q: float, digits: int | None = None) -> float:
    """The ``q``-th percentile of ``values`` (numpy's linear interpolation), rounded to ``digits`` when given."""
    value = float(np.percentile(np.asarray(list(values), dtype=float), q))
    return value if digits is None else round(value, digits)


def p50_p99_ms(latencies_ms: Iterable[float], digits: int = 3, prefix: str = "") -> dict[str, float]:
    """``{"<prefix>p50_ms": ..., "<prefix>p99_ms": ...}`` of latencies in milliseconds."""
    values = list(latencies_ms)
    return {f"{prefix}p50_ms": percentile(values, 50, digits), f"{prefix}p99_ms": percentile(values, 99, digits)}
