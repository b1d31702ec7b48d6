"""How unpadded token rows become a model's input arrays: the one padding rule.

Rows are right-padded to a common width: ``input_ids`` with the model's pad id, ``token_type_ids`` with
``PAD_TOKEN_TYPE`` (as transformers' tokenizers pad), and the ``attention_mask`` is 1 over each row's
tokens, then 0. The gateway pads each chunk it sends to Triton this way, model.py pads each
micro-batch this way, and so do the ONNX export's parity probes, the benchmarks and the tests.

Plain numpy on purpose: Triton's Python backend imports it too (its image has no grpc).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

__all__ = ["PAD_TOKEN_TYPE", "padded_rows"]

PAD_TOKEN_TYPE = 0  # token type of padding positions; masked out anyway


def padded_rows(rows: Sequence[Sequence[int]], pad: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """INT64 ``rows`` right-padded with ``pad`` to ``width`` (default: the longest row), and their
    attention mask (1 over each row's values, then 0)."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    longest = int(lengths.max()) if len(rows) else 0
    width = width or longest
    if width < longest:
        raise ValueError(f"width {width} is below the longest row ({longest} tokens)")
    mask = np.arange(width)[None, :] < lengths[:, None]
    values = np.full(mask.shape, pad, dtype=np.int64)
    if longest:
        if isinstance(rows[0], np.ndarray):
            values[mask] = np.concatenate(rows, dtype=np.int64)
        else:  # lists (the gateway's token ids): one pass over all of them, no array per row
            values[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return values, mask.astype(np.int64)
