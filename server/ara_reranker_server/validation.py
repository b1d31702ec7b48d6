"""What makes a job acceptable, whatever API it came through: the first thing wrong is named with its value."""

from __future__ import annotations

from ara_reranker_server.core_types import Limits, RerankJob
from ara_reranker_server.dispatch import PRIORITIES
from ara_reranker_server.errors import EmptyRequest, InvalidRequest

__all__ = ["validate"]


def validate(job: RerankJob, lim: Limits) -> None:
    """Raise InvalidRequest naming the first thing wrong with ``job``."""
    if not job.query.strip():
        raise InvalidRequest("query is empty")
    if not job.documents:
        raise EmptyRequest("documents is empty: send at least one document")
    if len(job.documents) > lim.max_documents:
        raise InvalidRequest(f"{len(job.documents)} documents exceed max_documents={lim.max_documents}; split the request")
    if len(job.query) > lim.max_query_chars:
        raise InvalidRequest(f"query has {len(job.query)} characters; max_query_chars={lim.max_query_chars}")
    if job.instruction is not None and len(job.instruction) > lim.max_query_chars:
        raise InvalidRequest(f"instruction has {len(job.instruction)} characters; max_query_chars={lim.max_query_chars}")
    for i, doc in enumerate(job.documents):
        if len(doc) > lim.max_document_chars:
            raise InvalidRequest(f"document {i} has {len(doc)} characters; max_document_chars={lim.max_document_chars}")
    if job.top_k is not None and job.top_k <= 0:
        raise InvalidRequest(f"top_k must be at least 1 when set; got {job.top_k}")
    if job.max_document_tokens is not None and job.max_document_tokens <= 0:
        raise InvalidRequest(f"max_document_tokens must be at least 1 when set; got {job.max_document_tokens}")
    if job.priority not in PRIORITIES:
        raise InvalidRequest(f"priority must be one of {', '.join(PRIORITIES)}; got {job.priority!r}")
    if job.from_start and job.split is not None:
        raise InvalidRequest("a document is cut at its start or split into windows, not both")
