"""The gateway's only door to Triton: token tensors in, logits out, over one or more endpoints.

``TritonScorer.score`` sends one chunk to a healthy endpoint (round robin) and, when that endpoint
is down, full or fails the forward pass (e.g. out of memory), retries the chunk on the next one until
the deadline; scoring is idempotent, so a retry is safe. An endpoint is ``host:port`` or a gRPC target
that names several servers (``dns:///triton-headless:8001``, ``ipv4:10.0.0.1:8001,10.0.0.2:8001``):
gRPC balances those per request (``round_robin``) and re-resolves DNS as pods come and go.

A background task polls each endpoint's model readiness and reports changes (health service, metrics);
an endpoint counts as down after ``failures_to_down`` consecutive failures (polls or calls), so one
transient error does not flap health. tritonclient's exceptions are translated into
``ara_reranker_server.errors`` here and nowhere else, by their gRPC status code.

Self-healing. An endpoint whose model fails to compute (Triton answers INTERNAL: its Python-backend stub died,
e.g. killed by the OOM killer, or a forward pass failed) is marked down at once and taken out of rotation: the
call goes to another endpoint, or, when none is left, ends UNAVAILABLE (retryable) at once instead of failing
every call for seconds. Readiness cannot bring it back, since Triton keeps calling a model with a dead stub ready;
a recovery task does: it probes the endpoint with a one-row inference, and while that fails, reloads the model
through Triton's repository API (unload, wait until unloaded, load; Triton started with
``--model-control-mode=explicit``), with exponential backoff. A target that names several servers is left to
Kubernetes' liveness probe (a reload there would reach a random pod).

Hangs. A Triton call that runs out of its deadline (the caller gets DEADLINE_EXCEEDED) makes the endpoint suspect:
a probe inference at the top priority checks it, and if that gets no answer within ``HANG_PROBE_TIMEOUT_S`` either
(the model's process stopped, or tritonserver itself), the endpoint is out of rotation, as above, until a probe
answers again: while probes time out, the process is left to resume (or to its liveness check); once one is answered
with an error (Triton gives up on a stub that stopped answering its health checks), the model is reloaded. While
tritonserver itself is unreachable (it crashed, and its supervisor, restart policy or liveness probe starts it again)
the recovery task only polls, every ``health_interval_s``, so that the new server takes traffic as soon as it answers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from ara_reranker_model.files import served_precision
from ara_reranker_server.errors import (
    BackendError,
    BackendFailed,
    BackendUnavailable,
    DeadlineExceeded,
    Overloaded,
    RerankerError,
)
from ara_reranker_server.tracing import NO_TRACING, Tracing

__all__ = ["TritonScorer", "ModelInfo"]

log = logging.getLogger(__name__)

HealthListener = Callable[[str, bool], None]
# gRPC target schemes that can name several servers; these are balanced per request.
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")
# Tries per chunk at least (more when there are more endpoints), and the pause before a repeated one.
RETRIES = 3
RETRY_BACKOFF_S = 0.05
# Failures another try may not repeat: an endpoint down or full, or a forward pass that failed there.
RETRYABLE = (BackendUnavailable, Overloaded, BackendFailed)
# The dynamic batcher's priority level of each request priority (the model configs declare two; 1 goes first).
TRITON_PRIORITY = {"interactive": 1, "batch": 2}
# Recovery of an endpoint whose model failed: backoff between tries, and bounds on each step.
RECOVERY_BACKOFF_S = (0.5, 15.0)
PROBE_TIMEOUT_S = 10.0
# How long a probe of a suspect endpoint may go unanswered before the endpoint counts as hung.
HANG_PROBE_TIMEOUT_S = 5.0
RELOAD_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ModelInfo:
    """What Triton's model configuration says about the served model."""

    max_batch_size: int
    dtype: str
    engine: str

    @classmethod
    def of_config(cls, config: dict) -> "ModelInfo":
        """From a model configuration as JSON: its batch size, engine, and the precision that engine runs
        for its ``dtype`` on the instances' device (``auto`` differs between engines on GPU)."""
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        engine = params.get("engine", "torch")
        on_gpu = any(group.get("kind") == "KIND_GPU" for group in config.get("instance_group", []))
        return cls(int(config.get("max_batch_size", 0)), served_precision(engine, params.get("dtype", "auto"), on_gpu), engine)


class TritonScorer:
    """Scores token chunks on Triton, failing over between endpoints."""

    def __init__(self, endpoints: tuple[str, ...], model: str, health_interval_s: float = 1.0,
                 failures_to_down: int = 3, max_message_bytes: int = 1 << 30, reload_failed: bool = True,
                 tracing: Tracing = NO_TRACING) -> None:
        """``tracing``: a span per chunk scored, whose trace context goes to Triton with each try."""
        self.endpoints = endpoints
        self.tracing = tracing
        self.model = model
        self.health_interval_s = health_interval_s
        self.failures_to_down = failures_to_down
        self.reload_failed = reload_failed
        # Endpoints whose model failed to compute, each with the task bringing it back (out of rotation until then).
        self._recovering: dict[str, asyncio.Task] = {}
        self._suspects: dict[str, asyncio.Task] = {}  # endpoints being checked for a hang after a Triton deadline
        self.reloads = {url: 0 for url in endpoints}  # models reloaded by this gateway, per endpoint
        # tritonclient for health, configuration and model control; scoring calls Triton's generated stub directly
        # on a channel of its own (the request built once from the arrays, the logits read from the raw reply: none of
        # tritonclient's per-call wrappers on the hot path).
        self._clients = {
            url: triton_aio.InferenceServerClient(url, channel_args=channel_args(url, max_message_bytes)) for url in endpoints
        }
        self._channels = {url: grpc.aio.insecure_channel(url, options=channel_args(url, max_message_bytes)) for url in endpoints}
        self._stubs = {url: service_pb2_grpc.GRPCInferenceServiceStub(channel) for url, channel in self._channels.items()}
        self.healthy = {url: False for url in endpoints}
        self._failures = {url: 0 for url in endpoints}
        self._next = itertools.cycle(range(len(endpoints)))
        self._listeners: list[HealthListener] = []
        self._poller: asyncio.Task | None = None

    # -- health ----------------------------------------------------------------------------------

    def on_health_change(self, listener: HealthListener) -> None:
        """Call ``listener(endpoint, healthy)`` whenever an endpoint's readiness changes."""
        self._listeners.append(listener)

    @property
    def any_healthy(self) -> bool:
        return any(self.healthy.values())

    async def check_health(self) -> None:
        """Poll every endpoint once and record the outcomes (a recovering endpoint is its recovery task's)."""
        polled = [url for url in self.endpoints if url not in self._recovering]
        states = await asyncio.gather(*(self._is_ready(url) for url in polled))
        for url, ready in zip(polled, states):
            self._record(url, ready)

    async def _is_live(self, url: str) -> bool:
        try:
            return bool(await self._clients[url].is_server_live(client_timeout=max(self.health_interval_s, 1.0)))
        except Exception:  # any failure to answer means not live
            return False

    async def _is_ready(self, url: str) -> bool:
        try:
            return bool(await self._clients[url].is_model_ready(self.model, client_timeout=max(self.health_interval_s, 1.0)))
        except Exception:  # any failure to answer means not ready
            return False

    def _record(self, url: str, ok: bool) -> None:
        """One success marks an endpoint up; ``failures_to_down`` failures in a row mark it down."""
        self._failures[url] = 0 if ok else self._failures[url] + 1
        if ok:
            self._set_health(url, True)
        elif self._failures[url] >= self.failures_to_down:
            self._set_health(url, False)

    def _set_health(self, url: str, ready: bool) -> None:
        if self.healthy[url] != ready:
            self.healthy[url] = ready
            log.warning("triton endpoint %s is %s", url, "ready" if ready else "NOT ready")
            for listener in self._listeners:
                try:
                    listener(url, ready)
                except Exception:  # a listener's bug must not stop health tracking
                    log.exception("health listener failed for %s", url)

    def start(self) -> None:
        """Start polling readiness in the background."""
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                await self.check_health()
            except Exception:  # keep polling whatever happens: health must recover by itself
                log.exception("readiness poll failed")
            await asyncio.sleep(self.health_interval_s)

    async def close(self) -> None:
        tasks = [task for task in (self._poller, *self._recovering.values(), *self._suspects.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poller = None
        self._recovering.clear()
        self._suspects.clear()
        await asyncio.gather(*(client.close() for client in self._clients.values()),
                             *(channel.close() for channel in self._channels.values()), return_exceptions=True)

    # -- recovery ----------------------------------------------------------------------------------

    def _failed(self, url: str, error: RerankerError) -> None:
        """The model on ``url`` could not compute, or hangs: down at once, out of rotation, and a task to bring it back."""
        self._failures[url] = max(self._failures[url], self.failures_to_down)
        self._set_health(url, False)
        if url not in self._recovering:
            log.warning("model %s failed on %s (%s): recovering it", self.model, url, error)
            self._recovering[url] = asyncio.get_running_loop().create_task(self._recover(url))

    def _suspect(self, url: str) -> None:
        """A Triton call to ``url`` ran out of its deadline: check, in the background, whether the endpoint hangs."""
        if url not in self._suspects and url not in self._recovering:
            self._suspects[url] = asyncio.get_running_loop().create_task(self._check_hang(url))

    async def _check_hang(self, url: str) -> None:
        try:
            if not await self._probe(url, HANG_PROBE_TIMEOUT_S):
                self._failed(url, DeadlineExceeded(f"no answer to a probe within {HANG_PROBE_TIMEOUT_S:.0f}s"))
        finally:
            self._suspects.pop(url, None)

    async def _recover(self, url: str) -> None:
        """Probe until the model computes again, reloading it between probes where that is possible and helps."""
        delay, longest = RECOVERY_BACKOFF_S
        reloadable = self.reload_failed and not url.startswith(BALANCED_SCHEMES)
        try:
            while (problem := await self._probe_error(url)) is not None:
                if isinstance(problem, BackendUnavailable) and not await self._is_live(url):
                    # tritonserver is gone (its supervisor starts it again with the model loaded): nothing to reload,
                    # and the new one should take traffic as soon as it is up, not after a grown backoff.
                    await asyncio.sleep(self.health_interval_s)
                    continue
                # A probe that times out finds a process stopped or busy: wait for it. One answered with an error
                # finds the model unable to compute (Triton also gives up on a stub that was stopped too long).
                if reloadable and not isinstance(problem, DeadlineExceeded):
                    reloadable = await self._reload(url)
                    if await self._probe(url):
                        break
                await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: gateways do not reload in step
                delay = min(delay * 2, longest)
            log.warning("model %s computes again on %s", self.model, url)
        finally:
            self._recovering.pop(url, None)
        self._record(url, True)

    async def _probe(self, url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
        """Whether the model on ``url`` scores one short row within ``timeout_s``."""
        return await self._probe_error(url, timeout_s) is None

    async def _probe_error(self, url: str, timeout_s: float = PROBE_TIMEOUT_S) -> RerankerError | None:
        """None when the model on ``url`` scores one short row within ``timeout_s``, at the top priority (token type
        ids included: models ignore them or need them); else what went wrong."""
        row = np.array([[0, 2]], dtype=np.int64)
        request = self._request([("input_ids", row), ("attention_mask", np.ones_like(row)),
                                 ("token_type_ids", np.zeros_like(row))], "interactive")
        try:
            await self._stubs[url].ModelInfer(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            return _translate_status(exc.code().name, exc.details() or "", url)
        return None

    async def _reload(self, url: str) -> bool:
        """Unload the model on ``url``, wait until it is gone, load it again (a new Python-backend stub). False when
        Triton does not allow it (not started with --model-control-mode=explicit): the endpoint is then left to
        the readiness polls and the orchestrator's liveness probe."""
        client = self._clients[url]
        try:
            await client.unload_model(self.model, client_timeout=RELOAD_TIMEOUT_S)
            deadline = time.monotonic() + RELOAD_TIMEOUT_S
            while await self._is_ready(url) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await client.load_model(self.model, client_timeout=RELOAD_TIMEOUT_S)
        except InferenceServerException as exc:
            if await self._is_live(url):  # a live Triton that refuses: its model control is not explicit
                log.error("cannot reload model %s on %s (%s %s): start Triton with --model-control-mode=explicit",
                          self.model, url, _code(exc), exc.message())
                return False
            log.warning("reloading model %s on %s failed: %s", self.model, url, exc.message())
            return True
        self.reloads[url] += 1
        log.warning("reloaded model %s on %s", self.model, url)
        return True

    # -- model info --------------------------------------------------------------------------------

    async def model_info(self) -> ModelInfo:
        """Batch size, dtype and engine from the first endpoint that answers."""
        for url in self._ordered():
            try:
                response = await self._clients[url].get_model_config(self.model, as_json=True, client_timeout=5)
            except Exception:
                continue
            return ModelInfo.of_config(response["config"])
        raise BackendUnavailable(f"no Triton endpoint answered for model {self.model}")

    # -- scoring -----------------------------------------------------------------------------------

    def _ordered(self) -> list[str]:
        """Endpoints to try: round robin, healthy ones first (unhealthy ones last, they may be back)."""
        start = next(self._next)
        rotated = self.endpoints[start:] + self.endpoints[:start]
        return sorted(rotated, key=lambda url: not self.healthy[url])

    def _attempts(self) -> list[str]:
        """Where to send a chunk, in order: every endpoint once, and at least ``RETRIES`` tries in all
        (a second try on a balanced target reaches another server; on a plain one, a restarted one)."""
        ordered = self._ordered()
        return [ordered[i % len(ordered)] for i in range(max(len(ordered), RETRIES))]

    async def score(self, input_ids: np.ndarray, attention_mask: np.ndarray, deadline: float,
                    token_type_ids: np.ndarray | None = None, priority: str = "interactive") -> np.ndarray:
        """Float32 logits [rows] for one right-padded chunk; ``deadline`` is a time.monotonic() instant."""
        tensors = [("input_ids", input_ids), ("attention_mask", attention_mask)]
        if token_type_ids is not None:
            tensors.append(("token_type_ids", token_type_ids))
        request = self._request(tensors, priority)
        rows, length = input_ids.shape
        with self.tracing.span("triton infer", {"triton.model": self.model, "reranker.rows": rows,
                                                "reranker.row_tokens": length}, client=True) as span:
            return await self._send(request, rows, deadline, span)

    def _request(self, tensors: list[tuple[str, np.ndarray]], priority: str) -> service_pb2.ModelInferRequest:
        """Triton's inference request for INT64 ``tensors`` (name, array), asking for the logits at ``priority``."""
        request = service_pb2.ModelInferRequest(model_name=self.model)
        for name, array in tensors:
            request.inputs.add(name=name, datatype="INT64", shape=array.shape)
            request.raw_input_contents.append(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        request.outputs.add(name="logits")
        request.parameters["priority"].uint64_param = TRITON_PRIORITY[priority]
        return request

    async def _send(self, request: service_pb2.ModelInferRequest, rows: int, deadline: float, span) -> np.ndarray:
        """One chunk's tries, endpoint after endpoint (``span``: the chunk's, whose trace Triton continues)."""
        headers = self.tracing.headers()  # Triton's spans of each try become children of ``span``
        metadata = tuple(headers.items()) if headers else None
        last: RerankerError | None = None
        tries = 0
        for attempt, url in enumerate(self._attempts()):
            if url in self._recovering:  # its model failed: out of rotation until it computes again
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("deadline exceeded before Triton answered")
            if attempt >= len(self.endpoints):  # the same endpoint again: give it a moment
                await asyncio.sleep(min(RETRY_BACKOFF_S * attempt, remaining / 2))
            tries += 1
            try:
                reply = await self._stubs[url].ModelInfer(request, metadata=metadata, timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                last = _translate_status(exc.code().name, exc.details() or "", url)
                span.add_event("try failed", {"triton.endpoint": url, "error": str(last)})
                if isinstance(last, DeadlineExceeded) and not url.startswith(BALANCED_SCHEMES):
                    self._suspect(url)
                if not isinstance(last, RETRYABLE):
                    raise last from exc
                if isinstance(last, BackendUnavailable):
                    self._record(url, False)
                elif isinstance(last, BackendFailed):
                    self._failed(url, last)
                log.warning("chunk failed on %s (%s); trying again", url, last)
                continue
            self._record(url, True)
            span.set_attribute("triton.endpoint", url)
            span.set_attribute("triton.tries", tries)
            return _logits_of(reply, rows, url)
        if last is None or isinstance(last, BackendFailed):
            recovering = ", ".join(self._recovering) or "none"
            raise BackendUnavailable(f"no Triton endpoint can compute model {self.model} now (recovering: {recovering}); "
                                     "retry shortly") from last
        raise last


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


def _code(exc: InferenceServerException) -> str:
    """The gRPC status name of a tritonclient error ("StatusCode.UNAVAILABLE" -> "UNAVAILABLE"; "" if none)."""
    return str(exc.status() or "").rsplit(".", 1)[-1]


# Triton's own refusals of a request it could take later: its queue is full, or the request waited in it past its
# queue timeout. Triton gives them no status code of their own (UNAVAILABLE, like a server that is down), only
# these fixed messages (dynamic_batch_scheduler.cc); they are overload, not an endpoint down.
TRITON_QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout expired")


def _logits_of(reply: service_pb2.ModelInferResponse, rows: int, url: str) -> np.ndarray:
    """The float32 logits [rows] of a reply, read in place from its raw output; BackendError when the reply is not
    the one output model.py gives (a deployment mismatch)."""
    if len(reply.outputs) != 1 or reply.outputs[0].datatype != "FP32" or len(reply.raw_output_contents) != 1 \
            or len(reply.raw_output_contents[0]) != 4 * rows:
        shapes = [(o.name, o.datatype, list(o.shape)) for o in reply.outputs]
        raise BackendError(f"Triton at {url} answered {shapes} for {rows} rows; expected FP32 logits [{rows}, 1]")
    return np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)


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
