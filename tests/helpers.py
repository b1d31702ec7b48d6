"""Small helpers shared by several test modules."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import grpc
import numpy as np

from client import RerankerError
from server.model_inputs import padded_rows
from server.triton_launcher import MODEL_REPOSITORY

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


def repository_copy(target: Path, **settings: int) -> Path:
    """A copy of the model repository whose CPU config sets e.g. max_queue_size, max_batch_size or
    max_queue_delay_microseconds to the given values."""
    repository = target / "repository"
    shutil.copytree(MODEL_REPOSITORY, repository)
    config = repository / "ara_reranker/configs/cpu.pbtxt"
    text = config.read_text()
    for key, value in settings.items():
        text, count = re.subn(rf"{key}: \d+", f"{key}: {value}", text)
        assert count == 1, key
    config.write_text(text)
    return repository
