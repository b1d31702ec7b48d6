"""Python client of the reranker service: ``RerankerClient`` (blocking) and ``AsyncRerankerClient``.

The generated stubs are importable as ``ara_reranker_client.v1.reranker_pb2`` / ``reranker_pb2_grpc``.
"""

__version__ = "0.2.0"

from ara_reranker_client.reranker_client import AsyncRerankerClient, RerankerClient, RerankerError, RerankResult, Window  # noqa: E402

__all__ = ["RerankerClient", "AsyncRerankerClient", "RerankResult", "RerankerError", "Window"]
