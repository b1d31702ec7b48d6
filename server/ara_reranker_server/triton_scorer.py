"""Scoring on Triton over one or more endpoints: failover, deadlines, spans, and the endpoints' self-healing.

``TritonScorer.score`` sends one chunk to a healthy endpoint (round robin) and, when that endpoint is down, full or
fails the forward pass (e.g. out of memory), retries the chunk on the next one until the deadline; scoring is
idempotent, so a retry is safe. The calls themselves are ``TritonEndpoint``'s (triton_endpoint.py), which
translates Triton's errors; whether an endpoint is up is ``EndpointHealth``'s (endpoint_health.py), fed by the
outcome of every call and by a background task that polls each endpoint's model readiness.

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

import numpy as np

from ara_reranker_model.files import served_precision
from ara_reranker_server.endpoint_health import EndpointHealth, HealthListener
from ara_reranker_server.errors import (
    BackendFailed,
    BackendUnavailable,
    DeadlineExceeded,
    Overloaded,
    RerankerError,
)
from ara_reranker_server.tracing import NO_TRACING, Tracing
from ara_reranker_server.triton_endpoint import InferRequest, TritonEndpoint, infer_request, logits_of

__all__ = ["TritonScorer", "ModelInfo"]

log = logging.getLogger(__name__)

# Tries per chunk at least (more when there are more endpoints), and the pause before a repeated one.
RETRIES = 3
RETRY_BACKOFF_S = 0.05
# Failures another try may not repeat: an endpoint down or full, or a forward pass that failed there.
RETRYABLE = (BackendUnavailable, Overloaded, BackendFailed)
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
    instances: int = 1  # model instances per device (KIND_CPU: in all; KIND_GPU: on each GPU it uses)

    @classmethod
    def of_config(cls, config: dict) -> "ModelInfo":
        """From a model configuration as JSON: its batch size, engine, and the precision that engine runs
        for its ``dtype`` on the instances' device (``auto`` differs between engines on GPU)."""
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        engine = params.get("engine", "torch")
        groups = config.get("instance_group", [])
        on_gpu = any(group.get("kind") == "KIND_GPU" for group in groups)
        instances = sum(int(group.get("count", 1)) for group in groups) or 1
        return cls(int(config.get("max_batch_size", 0)), served_precision(engine, params.get("dtype", "auto"), on_gpu), engine,
                   instances)


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
        self.health = EndpointHealth(endpoints, failures_to_down)
        # Endpoints whose model failed to compute, each with the task bringing it back (out of rotation until then).
        self._recovering: dict[str, asyncio.Task] = {}
        self._suspects: dict[str, asyncio.Task] = {}  # endpoints being checked for a hang after a Triton deadline
        self.reloads = {url: 0 for url in endpoints}  # models reloaded by this gateway, per endpoint
        self._endpoints = {url: TritonEndpoint(url, max_message_bytes) for url in endpoints}
        self._next = itertools.cycle(range(len(endpoints)))
        self._poller: asyncio.Task | None = None

    # -- health ----------------------------------------------------------------------------------

    @property
    def healthy(self) -> dict[str, bool]:
        """Whether each endpoint is up (EndpointHealth's own dict: read it, do not write it)."""
        return self.health.healthy

    def on_health_change(self, listener: HealthListener) -> None:
        """Call ``listener(endpoint, healthy)`` whenever an endpoint's readiness changes."""
        self.health.on_change(listener)

    @property
    def any_healthy(self) -> bool:
        """Whether some endpoint is up."""
        return self.health.any_healthy

    @property
    def _poll_timeout_s(self) -> float:
        return max(self.health_interval_s, 1.0)

    async def check_health(self) -> None:
        """Poll every endpoint once and record the outcomes (a recovering endpoint is its recovery task's)."""
        polled = [url for url in self.endpoints if url not in self._recovering]
        states = await asyncio.gather(*(self._endpoints[url].is_ready(self.model, self._poll_timeout_s) for url in polled))
        for url, ready in zip(polled, states):
            self.health.record(url, ready)

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
        """Stop polling and recovering, and close every endpoint's channels."""
        tasks = [task for task in (self._poller, *self._recovering.values(), *self._suspects.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poller = None
        self._recovering.clear()
        self._suspects.clear()
        await asyncio.gather(*(endpoint.close() for endpoint in self._endpoints.values()), return_exceptions=True)

    # -- recovery ----------------------------------------------------------------------------------

    def _failed(self, url: str, error: RerankerError) -> None:
        """The model on ``url`` could not compute, or hangs: down at once, out of rotation, and a task to bring it back."""
        self.health.mark_down(url)
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
        endpoint = self._endpoints[url]
        reloadable = self.reload_failed and not endpoint.balanced
        try:
            while (problem := await self._probe_error(url)) is not None:
                if isinstance(problem, BackendUnavailable) and not await endpoint.is_live(self._poll_timeout_s):
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
        self.health.record(url, True)

    async def _probe(self, url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
        """Whether the model on ``url`` scores one short row within ``timeout_s``."""
        return await self._probe_error(url, timeout_s) is None

    async def _probe_error(self, url: str, timeout_s: float = PROBE_TIMEOUT_S) -> RerankerError | None:
        """None when the model on ``url`` scores one short row within ``timeout_s``, at the top priority (token type
        ids included: models ignore them or need them); else what went wrong."""
        row = np.array([[0, 2]], dtype=np.int64)
        request = infer_request(self.model, [("input_ids", row), ("attention_mask", np.ones_like(row)),
                                             ("token_type_ids", np.zeros_like(row))], "interactive")
        try:
            await self._endpoints[url].infer(request, timeout_s)
        except RerankerError as exc:
            return exc
        return None

    async def _reload(self, url: str) -> bool:
        """Unload the model on ``url``, wait until it is gone, load it again (a new Python-backend stub). False when
        Triton does not allow it (not started with --model-control-mode=explicit): the endpoint is then left to
        the readiness polls and the orchestrator's liveness probe."""
        endpoint = self._endpoints[url]
        try:
            await endpoint.unload(self.model, RELOAD_TIMEOUT_S)
            deadline = time.monotonic() + RELOAD_TIMEOUT_S
            while await endpoint.is_ready(self.model, self._poll_timeout_s) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await endpoint.load(self.model, RELOAD_TIMEOUT_S)
        except RerankerError as exc:
            if await endpoint.is_live(self._poll_timeout_s):  # a live Triton that refuses: its model control is not explicit
                log.error("cannot reload model %s on %s (%s): start Triton with --model-control-mode=explicit",
                          self.model, url, exc)
                return False
            log.warning("reloading model %s on %s failed: %s", self.model, url, exc)
            return True
        self.reloads[url] += 1
        log.warning("reloaded model %s on %s", self.model, url)
        return True

    # -- model info --------------------------------------------------------------------------------

    async def model_info(self) -> ModelInfo:
        """Batch size, dtype and engine from the first endpoint that answers."""
        for url in self._ordered():
            try:
                config = await self._endpoints[url].model_config(self.model, timeout=5)
            except Exception:  # not this one: ask the next
                continue
            return ModelInfo.of_config(config)
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
        request = infer_request(self.model, tensors, priority)
        rows, length = input_ids.shape
        with self.tracing.span("triton infer", {"triton.model": self.model, "reranker.rows": rows,
                                                "reranker.row_tokens": length}, client=True) as span:
            return await self._send(request, rows, deadline, span)

    async def _send(self, request: InferRequest, rows: int, deadline: float, span) -> np.ndarray:
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
            endpoint = self._endpoints[url]
            try:
                reply = await endpoint.infer(request, remaining, metadata)
            except RerankerError as exc:
                last = exc
                span.add_event("try failed", {"triton.endpoint": url, "error": str(last)})
                if isinstance(last, DeadlineExceeded) and not endpoint.balanced:
                    self._suspect(url)
                if not isinstance(last, RETRYABLE):
                    raise
                if isinstance(last, BackendUnavailable):
                    self.health.record(url, False)
                elif isinstance(last, BackendFailed):
                    self._failed(url, last)
                log.warning("chunk failed on %s (%s); trying again", url, last)
                continue
            self.health.record(url, True)
            span.set_attribute("triton.endpoint", url)
            span.set_attribute("triton.tries", tries)
            return logits_of(reply, rows, url)
        if last is None or isinstance(last, BackendFailed):
            recovering = ", ".join(self._recovering) or "none"
            raise BackendUnavailable(f"no Triton endpoint can compute model {self.model} now (recovering: {recovering}); "
                                     "retry shortly") from last
        raise last
