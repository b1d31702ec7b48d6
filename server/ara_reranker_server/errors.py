"""The gateway's exceptions and the one table that says how each API answers them.

Lower layers (tritonclient, the tokenizer) are translated into these in exactly one place each
(``triton_client.py``, ``reranking.py``); every API module answers them through ``ANSWERS``: the
gRPC status (reranker.v1), the HTTP status of the Cohere/Jina dialect (JSON ``{"message"}``), and TEI's
``error_type`` with the HTTP and gRPC status TEI gives it. Anything that is not a ``RerankerError`` is a
bug: answered INTERNAL / 500, its cause logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

__all__ = [
    "RerankerError",
    "InvalidRequest",
    "EmptyRequest",
    "PayloadTooLarge",
    "ModelNotFound",
    "Overloaded",
    "BackendUnavailable",
    "DeadlineExceeded",
    "BackendError",
    "BackendFailed",
    "Unauthenticated",
    "Internal",
    "Answer",
    "ANSWERS",
    "answer_of",
    "status_of",
]


class RerankerError(Exception):
    """Base of every error the gateway answers on purpose; the message is shown to the caller."""


class InvalidRequest(RerankerError):
    """The request breaks the API or a limit (the message names which, and the value)."""


class EmptyRequest(InvalidRequest):
    """Nothing to rank: no documents (TEI answers this one apart, as ``Empty``)."""


class PayloadTooLarge(InvalidRequest):
    """The request body is over the size limit."""


class ModelNotFound(RerankerError):
    """The request names a model this gateway does not serve (the message lists the served ones)."""


class Overloaded(RerankerError):
    """Too much work in flight (gateway admission or Triton's queue); retry later with backoff."""


class BackendUnavailable(RerankerError):
    """No Triton endpoint could serve the request (down, not ready, or unreachable)."""


class DeadlineExceeded(RerankerError):
    """The caller's deadline passed before Triton answered."""


class BackendError(RerankerError):
    """Triton answered with an unexpected error (logged with its cause)."""


class BackendFailed(BackendError):
    """Triton failed to compute (e.g. a forward pass ran out of memory); another endpoint may not."""


class Unauthenticated(RerankerError):
    """Missing or wrong API key."""


class Internal(RerankerError):
    """A bug in the gateway (the cause is in its log under the request id the message names)."""


@dataclass(frozen=True)
class Answer:
    """How each API answers one kind of error."""

    grpc: grpc.StatusCode  # reranker.v1 (and the request metrics' ``code`` label, whatever the API)
    http: int  # Cohere v1/v2 and Jina
    tei_type: str  # TEI's error_type
    tei_http: int  # TEI over HTTP
    tei_grpc: grpc.StatusCode  # tei.v1 over gRPC


_C = grpc.StatusCode
ANSWERS: dict[type[BaseException], Answer] = {
    EmptyRequest: Answer(_C.INVALID_ARGUMENT, 400, "Empty", 400, _C.INVALID_ARGUMENT),
    PayloadTooLarge: Answer(_C.INVALID_ARGUMENT, 413, "Validation", 413, _C.INVALID_ARGUMENT),
    InvalidRequest: Answer(_C.INVALID_ARGUMENT, 400, "Validation", 422, _C.INVALID_ARGUMENT),
    ModelNotFound: Answer(_C.NOT_FOUND, 404, "Validation", 404, _C.NOT_FOUND),
    Overloaded: Answer(_C.RESOURCE_EXHAUSTED, 429, "Overloaded", 429, _C.RESOURCE_EXHAUSTED),
    BackendUnavailable: Answer(_C.UNAVAILABLE, 503, "Unhealthy", 503, _C.UNAVAILABLE),
    DeadlineExceeded: Answer(_C.DEADLINE_EXCEEDED, 504, "Backend", 504, _C.DEADLINE_EXCEEDED),
    BackendError: Answer(_C.INTERNAL, 500, "Backend", 424, _C.FAILED_PRECONDITION),
    Unauthenticated: Answer(_C.UNAUTHENTICATED, 401, "Unauthorized", 401, _C.UNAUTHENTICATED),
    Internal: Answer(_C.INTERNAL, 500, "Backend", 500, _C.INTERNAL),
}


def answer_of(exc: BaseException) -> Answer:
    """How the APIs answer an exception: its class's entry (the nearest in its MRO), else INTERNAL."""
    for cls in type(exc).__mro__:
        if cls in ANSWERS:
            return ANSWERS[cls]
    return ANSWERS[Internal]


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The reranker.v1 gRPC status for an exception."""
    return answer_of(exc).grpc
