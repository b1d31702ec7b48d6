"""The gateway's exceptions and the one table that maps them to gRPC status codes.

Lower layers (tritonclient, the tokenizer) are translated into these in exactly one place each
(``triton_client.py``, ``reranking.py``); the gRPC service maps them with ``status_of``.
Anything that is not a ``RerankerError`` is a bug: answered INTERNAL, its cause logged.
"""

from __future__ import annotations

import grpc

__all__ = [
    "RerankerError",
    "InvalidRequest",
    "ModelNotFound",
    "Overloaded",
    "BackendUnavailable",
    "DeadlineExceeded",
    "BackendError",
    "BackendFailed",
    "Unauthenticated",
    "status_of",
]


class RerankerError(Exception):
    """Base of every error the gateway answers on purpose; the message is shown to the caller."""


class InvalidRequest(RerankerError):
    """The request breaks the API or a limit (the message names which, and the value)."""


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


_STATUS = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    BackendError: grpc.StatusCode.INTERNAL,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status for an exception: its class's entry, else INTERNAL."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return grpc.StatusCode.INTERNAL
