"""The gateway's exceptions and the one table that says how each API answers them.

Lower layers (tritonclient, the tokenizer) are translated into these in exactly one place each
(``triton_endpoint.py``, ``tokenization.py``); every API module answers them through ``ANSWERS``: the
gRPC status (reranker.v1), the HTTP status of the Cohere/Jina dialect (JSON ``{"message"}``), and TEI's
``error_type`` with the HTTP and gRPC status TEI gives it. Anything that is not a ``RerankerError`` is a
bug: answered INTERNAL / 500, its cause logged.

gRPC statuses are named here as gRPC names them (``grpc.StatusCode[name]`` in the gRPC transports), so that
the core and this table import no transport.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "StartupError",
    "Answer",
    "ANSWERS",
    "answer_of",
    "status_of",
]


class RerankerError(Exception):
    """Base of every error the gateway answers on purpose; the message is shown to the caller. ``field``: the
    request field at fault where one is (a JSON path such as ``documents.2``), for the dialects that name it
    apart from the message (vLLM's ``param``)."""

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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


class StartupError(Exception):
    """The gateway cannot start as configured (a model directory, a listen address); the entry point exits with
    the message."""


@dataclass(frozen=True)
class Answer:
    """How each API answers one kind of error."""

    grpc: str  # reranker.v1's status name (also the request metrics' ``code`` label, whatever the API)
    http: int  # Cohere v1/v2, Jina and vLLM; NIM too, but 422 where this is 400 (api/http.py)
    tei_type: str  # TEI's error_type
    tei_http: int  # TEI over HTTP
    tei_grpc: str  # tei.v1's status name over gRPC


ANSWERS: dict[type[BaseException], Answer] = {
    EmptyRequest: Answer("INVALID_ARGUMENT", 400, "Empty", 400, "INVALID_ARGUMENT"),
    PayloadTooLarge: Answer("INVALID_ARGUMENT", 413, "Validation", 413, "INVALID_ARGUMENT"),
    InvalidRequest: Answer("INVALID_ARGUMENT", 400, "Validation", 422, "INVALID_ARGUMENT"),
    ModelNotFound: Answer("NOT_FOUND", 404, "Validation", 404, "NOT_FOUND"),
    Overloaded: Answer("RESOURCE_EXHAUSTED", 429, "Overloaded", 429, "RESOURCE_EXHAUSTED"),
    BackendUnavailable: Answer("UNAVAILABLE", 503, "Unhealthy", 503, "UNAVAILABLE"),
    DeadlineExceeded: Answer("DEADLINE_EXCEEDED", 504, "Backend", 504, "DEADLINE_EXCEEDED"),
    BackendError: Answer("INTERNAL", 500, "Backend", 424, "FAILED_PRECONDITION"),
    Unauthenticated: Answer("UNAUTHENTICATED", 401, "Unauthorized", 401, "UNAUTHENTICATED"),
    Internal: Answer("INTERNAL", 500, "Backend", 500, "INTERNAL"),
}


def answer_of(exc: BaseException) -> Answer:
    """How the APIs answer an exception: its class's entry (the nearest in its MRO), else INTERNAL."""
    for cls in type(exc).__mro__:
        if cls in ANSWERS:
            return ANSWERS[cls]
    return ANSWERS[Internal]


def status_of(exc: BaseException) -> str:
    """The name of the reranker.v1 gRPC status for an exception (``grpc.StatusCode[status_of(exc)]``)."""
    return answer_of(exc).grpc
