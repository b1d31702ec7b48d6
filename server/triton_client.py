"""The gateway's only door to Triton: token tensors in, logits out, over one or more endpoints.

``TritonScorer.score`` sends one chunk to a healthy endpoint (round robin) and, when that endpoint
fails or is full, retries the chunk on the next one until the deadline; scoring is idempotent, so a
retry is safe. A background task polls each endpoint's model readiness and reports changes (health
service, metrics). tritonclient's exceptions are translated into ``server.errors`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from server.errors import BackendError, BackendUnavailable, DeadlineExceeded, Overloaded, RerankerError

__all__ = ["TritonScorer", "ModelInfo"]

log = logging.getLogger(__name__)

HealthListener = Callable[[str, bool], None]


@dataclass(frozen=True)
class ModelInfo:
    """What Triton's model configuration says about the served model."""

    max_batch_size: int
    dtype: str
    engine: str


class TritonScorer:
    """Scores token chunks on Triton, failing over between endpoints."""

    def __init__(self, endpoints: tuple[str, ...], model: str, health_interval_s: float = 1.0) -> None:
        self.endpoints = endpoints
        self.model = model
        self.health_interval_s = health_interval_s
        self._clients = {url: triton_aio.InferenceServerClient(url) for url in endpoints}
        self.healthy = {url: False for url in endpoints}
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
        """Poll every endpoint once and record changes."""
        states = await asyncio.gather(*(self._is_ready(url) for url in self.endpoints))
        for url, ready in zip(self.endpoints, states):
            self._set_health(url, ready)

    async def _is_ready(self, url: str) -> bool:
        try:
            return bool(await self._clients[url].is_model_ready(self.model, client_timeout=max(self.health_interval_s, 1.0)))
        except Exception:  # any failure to answer means not ready
            return False

    def _set_health(self, url: str, ready: bool) -> None:
        if self.healthy[url] != ready:
            self.healthy[url] = ready
            log.warning("triton endpoint %s is %s", url, "ready" if ready else "NOT ready")
            for listener in self._listeners:
                listener(url, ready)

    def start(self) -> None:
        """Start polling readiness in the background."""
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(self.health_interval_s)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        await asyncio.gather(*(client.close() for client in self._clients.values()), return_exceptions=True)

    # -- model info --------------------------------------------------------------------------------

    async def model_info(self) -> ModelInfo:
        """Batch size, dtype and engine from the first endpoint that answers."""
        for url in self._ordered():
            try:
                response = await self._clients[url].get_model_config(self.model, as_json=True, client_timeout=5)
            except Exception:
                continue
            config = response["config"]
            params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
            on_gpu = any(group.get("kind") == "KIND_GPU" for group in config.get("instance_group", []))
            dtype = params.get("dtype", "auto")
            if dtype == "auto":
                dtype = "float16" if on_gpu else "float32"
            return ModelInfo(int(config.get("max_batch_size", 0)), dtype, params.get("engine", "torch"))
        raise BackendUnavailable(f"no Triton endpoint answered for model {self.model}")

    # -- scoring -----------------------------------------------------------------------------------

    def _ordered(self) -> list[str]:
        """Endpoints to try: round robin, healthy ones first (unhealthy ones last, they may be back)."""
        start = next(self._next)
        rotated = self.endpoints[start:] + self.endpoints[:start]
        return sorted(rotated, key=lambda url: not self.healthy[url])

    async def score(self, input_ids: np.ndarray, attention_mask: np.ndarray, deadline: float) -> np.ndarray:
        """Float32 logits [rows] for one right-padded chunk; ``deadline`` is a time.monotonic() instant."""
        inputs = []
        for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            tensor = InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [InferRequestedOutput("logits")]
        last: RerankerError | None = None
        for url in self._ordered():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("deadline exceeded before Triton answered")
            try:
                result = await self._clients[url].infer(self.model, inputs, outputs=outputs, client_timeout=remaining)
                return result.as_numpy("logits").reshape(-1).astype(np.float32, copy=False)
            except InferenceServerException as exc:
                last = _translate(exc, url)
            if isinstance(last, (BackendUnavailable, Overloaded)):
                if isinstance(last, BackendUnavailable):
                    self._set_health(url, False)
                log.warning("chunk failed on %s (%s); trying another endpoint", url, last)
                continue
            raise last
        assert last is not None
        raise last


def _translate(exc: InferenceServerException, url: str) -> RerankerError:
    """tritonclient's error -> the gateway's (the one place this mapping lives)."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return DeadlineExceeded(f"deadline exceeded waiting for Triton at {url}")
    if "Exceeds maximum queue size" in message or "RESOURCE_EXHAUSTED" in status:
        return Overloaded(f"Triton at {url} is at capacity: {message}")
    if "UNAVAILABLE" in status or "CANCELLED" in status or "not found" in message or "is not ready" in message:
        return BackendUnavailable(f"Triton at {url} is unavailable: {message}")
    if "INVALID_ARG" in status:
        # The gateway built these tensors, so Triton refusing them is a deployment mismatch (e.g. chunk_size
        # above max_batch_size, a tokenizer that is not the served model's), not the caller's fault.
        return BackendError(f"Triton at {url} refused the gateway's tensors (check the gateway and model configs): {message}")
    return BackendError(f"Triton at {url} failed: {status} {message}")
