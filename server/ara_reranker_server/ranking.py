"""The ranking rule and the returned score, each defined once.

The ranking is the order of the model's logits as the model returned them (float32, compared in float64), never
of a derived score: float32 sigmoids saturate to exactly 1.0 above a logit of ~16.6 and would turn different
logits into ties. The sigmoid only makes the returned score.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "rank_by_logits"]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable sigmoid computed in float32 (the returned score; never a ranking key)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def rank_by_logits(logits: np.ndarray) -> np.ndarray:
    """Indices best first: higher logit first, equal logits keep the lower index first."""
    logits = np.asarray(logits).astype(np.float64)  # upcast before anything else (fp16 from GPUs)
    return np.argsort(-logits, kind="stable")  # stable: equal logits stay in index order
