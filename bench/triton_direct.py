"""Token arrays sent straight to Triton (no gateway), as the benchmarks that measure Triton alone do: tritonclient's
inputs built once here."""

from __future__ import annotations

import numpy as np

__all__ = ["token_inputs", "infer_chunks"]


def token_inputs(input_ids: np.ndarray, attention_mask: np.ndarray) -> list:
    """tritonclient's INT64 ``input_ids`` and ``attention_mask`` inputs (for its gRPC client, sync or aio)."""
    from tritonclient.grpc import InferInput

    out = []
    for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        tensor = InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.int64))
        out.append(tensor)
    return out


async def infer_chunks(client, model: str, chunks: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Send a request's prepared chunks (input_ids, attention_mask) to Triton one after another with tritonclient's aio
    ``client``, reading each reply's logits; the rows sent."""
    from tritonclient.grpc import InferRequestedOutput

    rows = 0
    for input_ids, mask in chunks:
        result = await client.infer(model, token_inputs(input_ids, mask), outputs=[InferRequestedOutput("logits")])
        result.as_numpy("logits")
        rows += input_ids.shape[0]
    return rows
