"""Python client of the reranker service: ``RerankerClient`` (blocking) and ``AsyncRerankerClient``.

The generated stubs are importable as ``reranker.v1.reranker_pb2`` / ``reranker_pb2_grpc``.
"""

from client.reranker_client import AsyncRerankerClient, RerankerClient, RerankerError, RerankResult, Window

__all__ = ["RerankerClient", "AsyncRerankerClient", "RerankResult", "RerankerError", "Window"]
