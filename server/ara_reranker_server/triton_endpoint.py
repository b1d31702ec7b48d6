"""One Triton endpoint over gRPC: the gateway's only code that talks to Triton.

A ``TritonEndpoint`` owns, for one URL, one channel and Triton's generated stub (tritonclient's ``service_pb2``) on
it, for inference, health, configuration and model control alike: the inference request is built once from the
arrays and the logits read in place from the raw reply (none of tritonclient's per-call wrappers on the hot path),
and the readiness polls share the inference's connection. Every failure comes out as an
``ara_reranker_server.errors`` exception, translated by its gRPC status code in ``_translate_status``, the one place
that mapping lives.

A URL is ``host:port`` or a gRPC target that names several servers (``dns:///triton-headless:8001``,
``ipv4:10.0.0.1:8001,10.0.0.2:8001``): gRPC balances those per request (``round_robin``) and re-resolves DNS as
pods come and go.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ara_reranker_server.errors import (
    BackendError,
    BackendFailed,
    BackendUnavailable,
    DeadlineExceeded,
    Overloaded,
    RerankerError,
)

__all__ = ["TritonEndpoint", "InferRequest", "InferReply", "infer_request", "logits_of", "channel_args", "TRITON_PRIORITY"]

InferRequest = service_pb2.ModelInferRequest
InferReply = service_pb2.ModelInferResponse
# gRPC target schemes that can name several servers; these are balanced per request.
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")
# The dynamic batcher's priority level of each request priority (the model configs declare two; 1 goes first).
TRITON_PRIORITY = {"interactive": 1, "batch": 2}
# Triton's own refusals of a request it could take later: its queue is full, or the request waited in it past its
# queue timeout. Triton gives them no status code of their own (UNAVAILABLE, like a server that is down), only
# these fixed messages (dynamic_batch_scheduler.cc); they are overload, not an endpoint down.
TRITON_QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout expired")


class TritonEndpoint:
    """One Triton URL: its channel, and its calls with their errors translated."""

    def __init__(self, url: str, max_message_bytes: int = 1 << 30) -> None:
        """The channel opens lazily: nothing is dialled until the first call."""
        self.url = url
        self._channel = grpc.aio.insecure_channel(url, options=channel_args(url, max_message_bytes))
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    @property
    def balanced(self) -> bool:
        """Whether the URL names several servers (each call may reach another one)."""
        return self.url.startswith(BALANCED_SCHEMES)

    async def infer(self, request: InferRequest, timeout: float,
                    metadata: tuple[tuple[str, str], ...] | None = None) -> InferReply:
        """Triton's reply to ``request`` within ``timeout`` seconds; a RerankerError for its gRPC status if none."""
        return await self._call(self._stub.ModelInfer, request, timeout, metadata)

    async def is_live(self, timeout: float) -> bool:
        """Whether tritonserver answers that it is live; any failure to answer means not."""
        try:
            return (await self._call(self._stub.ServerLive, service_pb2.ServerLiveRequest(), timeout)).live
        except RerankerError:
            return False

    async def is_ready(self, model: str, timeout: float) -> bool:
        """Whether Triton answers that ``model`` is ready; any failure to answer means not."""
        try:
            return (await self._call(self._stub.ModelReady, service_pb2.ModelReadyRequest(name=model), timeout)).ready
        except RerankerError:
            return False

    async def model_config(self, model: str, timeout: float) -> dict:
        """``model``'s configuration as JSON (Triton's ``config``, its field names as in model_config.proto), or a
        RerankerError."""
        response = await self._call(self._stub.ModelConfig, service_pb2.ModelConfigRequest(name=model), timeout)
        return MessageToDict(response.config, preserving_proto_field_name=True)

    async def unload(self, model: str, timeout: float) -> None:
        """Ask Triton to unload ``model`` (explicit model control only), or a RerankerError."""
        await self._call(self._stub.RepositoryModelUnload, service_pb2.RepositoryModelUnloadRequest(model_name=model), timeout)

    async def load(self, model: str, timeout: float) -> None:
        """Ask Triton to load ``model`` (explicit model control only), or a RerankerError."""
        await self._call(self._stub.RepositoryModelLoad, service_pb2.RepositoryModelLoadRequest(model_name=model), timeout)

    async def close(self) -> None:
        """Close the channel; errors closing are of no interest."""
        await asyncio.gather(self._channel.close(), return_exceptions=True)

    async def _call(self, method, request, timeout: float, metadata: tuple[tuple[str, str], ...] | None = None):
        """``method(request)`` on Triton within ``timeout`` seconds; a RerankerError for its gRPC status if it fails."""
        try:
            return await method(request, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translate_status(exc.code().name, exc.details() or "", self.url) from exc


def infer_request(model: str, tensors: list[tuple[str, np.ndarray]], priority: str) -> InferRequest:
    """Triton's inference request for INT64 ``tensors`` (name, array), asking for the logits at ``priority``."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in tensors:
        request.inputs.add(name=name, datatype="INT64", shape=array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    request.outputs.add(name="logits")
    request.parameters["priority"].uint64_param = TRITON_PRIORITY[priority]
    return request


def logits_of(reply: InferReply, rows: int, url: str) -> np.ndarray:
    """The float32 logits [rows] of a reply, read in place from its raw output; BackendError when the reply is not
    the one output model.py gives (a deployment mismatch)."""
    if len(reply.outputs) != 1 or reply.outputs[0].datatype != "FP32" or len(reply.raw_output_contents) != 1 \
            or len(reply.raw_output_contents[0]) != 4 * rows:
        shapes = [(o.name, o.datatype, list(o.shape)) for o in reply.outputs]
        raise BackendError(f"Triton at {url} answered {shapes} for {rows} rows; expected FP32 logits [{rows}, 1]")
    return np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)


def channel_args(url: str, max_message_bytes: int) -> list[tuple[str, object]]:
    """gRPC channel options for a Triton endpoint: message size and keepalive; a target naming several servers is balanced per
    request, and DNS is re-resolved when a connection closes (Triton's --grpc-max-connection-age). A Triton that
    comes back (restarted on its ports) is reconnected to within a second: gRPC's default reconnect backoff grows
    to two minutes, which kept a restarted one idle for seconds."""
    args: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if url.startswith(BALANCED_SCHEMES):
        args.append(("grpc.lb_policy_name", "round_robin"))
    return args


def _translate_status(code: str, message: str, url: str) -> RerankerError:
    """A Triton call's gRPC status (its name, e.g. "UNAVAILABLE") -> the gateway's error: the one place this mapping lives."""
    if code == "DEADLINE_EXCEEDED":
        return DeadlineExceeded(f"deadline exceeded waiting for Triton at {url}")
    if code == "RESOURCE_EXHAUSTED" or (code == "UNAVAILABLE" and message.endswith(TRITON_QUEUE_REFUSALS)):
        return Overloaded(f"Triton at {url} is at capacity: {message}")
    if code in ("UNAVAILABLE", "CANCELLED", "NOT_FOUND"):  # down, unreachable, the model not (yet) loaded there
        return BackendUnavailable(f"Triton at {url} is unavailable: {message}")
    if code == "INVALID_ARGUMENT":
        # The gateway built these tensors, so Triton refusing them is a deployment mismatch (e.g. chunk_size
        # above max_batch_size, a tokenizer that is not the served model's), not the caller's fault.
        return BackendError(f"Triton at {url} refused the gateway's tensors (check the gateway and model configs): {message}")
    # INTERNAL and the rest: the model failed to compute there (its stub died, a forward pass ran out of memory).
    return BackendFailed(f"Triton at {url} failed: {code} {message}")
