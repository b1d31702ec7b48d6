"""Optional API-key authentication, the same for gRPC and HTTP: ``authorization: Bearer <key>``,
checked in constant time.

Open without a key: gRPC health checks and server reflection, HTTP ``/health`` and ``/openapi.json``
(load balancers and tools need them; they reveal only the public API shape). Keys are never logged.
"""

from __future__ import annotations

import hmac
from typing import Awaitable, Callable

import grpc

from ara_reranker_server.errors import Unauthenticated, status_of

__all__ = ["ApiKeys", "ApiKeyInterceptor", "OPEN_METHOD_PREFIXES", "DENIED"]

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
DENIED = Unauthenticated("missing or invalid API key: send 'authorization: Bearer <key>'")


class ApiKeys:
    """The accepted keys."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise ValueError("ApiKeys needs at least one key")
        self._keys = [key.encode() for key in keys]

    def accept(self, header: str | bytes | None) -> bool:
        """Whether an ``authorization`` header value is ``Bearer <one of the keys>``."""
        if isinstance(header, bytes):
            header = header.decode(errors="replace")
        scheme, _, supplied = (header or "").partition(" ")
        supplied_bytes = supplied.strip().encode()
        # Compare against every key, always, so timing reveals neither a key nor which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(key, supplied_bytes)
        return scheme.lower() == "bearer" and matched


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses gRPC calls without a valid key with UNAUTHENTICATED; ``on_denied(method)`` counts them
    (``method``: the full /package.Service/Method name)."""

    def __init__(self, keys: ApiKeys, on_denied: Callable[[str], None] | None = None) -> None:
        self._keys = keys
        self._on_denied = on_denied

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        header = next((value for key, value in details.invocation_metadata or () if key == "authorization"), None)
        if details.method.startswith(OPEN_METHOD_PREFIXES) or self._keys.accept(header):
            return await continuation(details)
        if self._on_denied is not None:
            self._on_denied(details.method)
        handler = await continuation(details)  # only to answer in the method's own shape (a stream or not)
        return None if handler is None else _DENY[(handler.request_streaming, handler.response_streaming)]


async def _deny(request, context: grpc.aio.ServicerContext):
    await context.abort(grpc.StatusCode[status_of(DENIED)], str(DENIED))


_DENY = {
    (False, False): grpc.unary_unary_rpc_method_handler(_deny),
    (True, False): grpc.stream_unary_rpc_method_handler(_deny),
    (False, True): grpc.unary_stream_rpc_method_handler(_deny),
    (True, True): grpc.stream_stream_rpc_method_handler(_deny),
}
