"""One Triton endpoint over gRPC: the gateway's only code that imports tritonclient's client or grpc for Triton.

A ``TritonEndpoint`` owns, for one URL, a tritonclient aio client (health, configuration, model control) and a
channel of its own with Triton's generated stub for ``ModelInfer`` (the request built once from the arrays, the
logits read from the raw reply: none of tritonclient's per-call wrappers on the hot path). Every failure comes out
as an ``ara_reranker_server.errors`` exception, translated by its gRPC status code in ``_translate_status``, the
one place that mapping lives.

A URL is ``host:port`` or a gRPC target that names several servers (``dns:///triton-headless:8001``,
``ipv4:10.0.0.1:8001,10.0.0.2:8001``): gRPC balances those per request (``round_robin``) and re-resolves DNS as
pods come and go.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

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
    """One Triton URL: its clients, and its calls with their errors translated."""

    def __init__(self, url: str, max_message_bytes: int = 1 << 30) -> None:
        """Channels open lazily: nothing is dialled until the first call."""
        self.url = url
        self._client = triton_aio.InferenceServerClient(url, channel_args=channel_args(url, max_message_bytes))
        self._channel = grpc.aio.insecure_channel(url, options=channel_args(url, max_message_bytes))
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    @property
    def balanced(self) -> bool:
        """Whether the URL names several servers (each call may reach another one)."""
        return self.url.startswith(BALANCED_SCHEMES)

    async def infer(self, request: InferRequest, timeout: float,
                    metadata: tuple[tuple[str, str], ...] | None = None) -> InferReply:
        """Triton's reply to ``request`` within ``timeout`` seconds; a RerankerError for its gRPC status if none."""
        try:
            return await self._stub.ModelInfer(request, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _translate_status(exc.code().name, exc.details() or "", self.url) from exc

    async def is_live(self, timeout: float) -> bool:
        """Whether tritonserver answers that it is live; any failure to answer means not."""
        try:
            return bool(await self._client.is_server_live(client_timeout=timeout))
        except Exception:  # any failure to answer means not live
            return False

    async def is_ready(self, model: str, timeout: float) -> bool:
        """Whether Triton answers that ``model`` is ready; any failure to answer means not."""
        try:
            return bool(await self._client.is_model_ready(model, client_timeout=timeout))
        except Exception:  # any failure to answer means not ready
            return False

    async def model_config(self, model: str, timeout: float) -> dict:
        """``model``'s configuration as JSON (Triton's ``config``), or a RerankerError."""
        try:
            response = await self._client.get_model_config(model, as_json=True, client_timeout=timeout)
        except InferenceServerException as exc:
            raise _translated(exc, self.url) from exc
        return response["config"]

    async def unload(self, model: str, timeout: float) -> None:
        """Ask Triton to unload ``model`` (explicit model control only), or a RerankerError."""
        try:
            await self._client.unload_model(model, client_timeout=timeout)
        except InferenceServerException as exc:
            raise _translated(exc, self.url) from exc

    async def load(self, model: str, timeout: float) -> None:
        """Ask Triton to load ``model`` (explicit model control only), or a RerankerError."""
        try:
            await self._client.load_model(model, client_timeout=timeout)
        except InferenceServerException as exc:
            raise _translated(exc, self.url) from exc

    async def close(self) -> None:
        """Close both channels; errors closing are of no interest."""
        await asyncio.gather(self._client.close(), self._channel.close(), return_exceptions=True)


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
    """gRPC channel options for a Triton endpoint. tritonclient drops its own defaults (message size,
    keepalive) when given any, so they are all here; a target naming several servers is balanced per
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


def _translated(exc: InferenceServerException, url: str) -> RerankerError:
    """A tritonclient error -> the gateway's, through the same table as the stub's (its status name, e.g.
    "StatusCode.UNAVAILABLE" -> "UNAVAILABLE"; none at all counts as UNAVAILABLE: tritonclient gave no answer)."""
    code = str(exc.status() or "").rsplit(".", 1)[-1] or "UNAVAILABLE"
    return _translate_status(code, exc.message() or "", url)


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
