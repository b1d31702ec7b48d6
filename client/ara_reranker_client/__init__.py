"""Python client of the reranker service: ``RerankerClient`` (blocking) and ``AsyncRerankerClient``.

The generated stubs are importable as ``ara_reranker_client.v1.reranker_pb2`` / ``reranker_pb2_grpc``.
"""

__version__ = "0.2.0"

from ara_reranker_client.reranker_client import (  # noqa: E402
    AsyncRerankerClient,
    RerankerClient,
    RerankerError,
    RerankResult,
    RetryPolicy,
    Window,
)

__all__ = ["RerankerClient", "AsyncRerankerClient", "RerankResult", "RerankerError", "RetryPolicy", "Window"]
