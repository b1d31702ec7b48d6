"""Optional API-key authentication: ``authorization: Bearer <key>`` checked in constant time.

Health checks and server reflection stay open (load balancers and grpcurl need them; they reveal only
the public API shape). Keys are never logged.
"""

from __future__ import annotations

import hmac
from typing import Awaitable, Callable

import grpc

__all__ = ["ApiKeyInterceptor", "OPEN_METHOD_PREFIXES"]

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid key with UNAUTHENTICATED; ``on_denied(method)`` counts them."""

    def __init__(self, keys: tuple[str, ...], on_denied: Callable[[str], None] | None = None) -> None:
        if not keys:
            raise ValueError("ApiKeyInterceptor needs at least one key")
        self._keys = [key.encode() for key in keys]
        self._on_denied = on_denied

    def _authorized(self, metadata) -> bool:
        header = ""
        for key, value in metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode(errors="replace")
                break
        scheme, _, supplied = header.partition(" ")
        supplied_bytes = supplied.strip().encode()
        # Compare against every key, always, so timing reveals neither a key nor which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(key, supplied_bytes)
        return scheme.lower() == "bearer" and matched

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(OPEN_METHOD_PREFIXES) or self._authorized(details.invocation_metadata):
            return await continuation(details)
        if self._on_denied is not None:
            self._on_denied(details.method.rsplit("/", 1)[-1])
        return _DENY


async def _deny(request, context: grpc.aio.ServicerContext):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key: send 'authorization: Bearer <key>'")


_DENY = grpc.unary_unary_rpc_method_handler(_deny)
