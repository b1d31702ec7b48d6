"""Friendly Python clients for the reranker service, sync and asyncio, over the generated stubs.

    from ara_reranker_client import RerankerClient
    with RerankerClient("localhost:50051") as reranker:
        for r in reranker.rerank("ما هي عاصمة السعودية؟", documents, top_k=3, return_documents=True):
            print(r.index, r.score, r.document)

Requests with more documents than the server's ``max_documents_per_request`` are split here and the
rankings merged, so callers can send candidate lists of any size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import grpc

from ara_reranker_client.v1 import reranker_pb2, reranker_pb2_grpc

__all__ = ["RerankerClient", "AsyncRerankerClient", "RerankResult", "RerankerError", "RetryPolicy", "Window", "TRUNCATIONS"]

# rerank(truncation=...): what to do with a document longer than the model's input.
TRUNCATIONS = {"end": reranker_pb2.TRUNCATION_END, "start": reranker_pb2.TRUNCATION_START,
               "none": reranker_pb2.TRUNCATION_NONE, "split": reranker_pb2.TRUNCATION_SPLIT}
# rerank(priority=...): interactive work goes first; batch work (re-indexing, evaluation) uses what it leaves.
PRIORITIES = {"interactive": reranker_pb2.PRIORITY_INTERACTIVE, "batch": reranker_pb2.PRIORITY_BATCH}


@dataclass(frozen=True)
class Window:
    """The window of a document that scored best (truncation="split"): its position among the
    document's windows and its text, ``document[start_char:end_char]``."""

    index: int
    start_char: int
    end_char: int


@dataclass(frozen=True)
class RerankResult:
    """One ranked document: its position in the request, its score, its text if asked for, the
    model's logit (the ranking's key: the float32 score saturates at 1.0, the logit does not) and, with
    truncation="split", the window that logit is of."""

    index: int
    score: float
    document: str | None = None
    logit: float = 0.0
    best_window: Window | None = None


class RerankerError(Exception):
    """A call failed; ``code`` is the gRPC status (INVALID_ARGUMENT, UNAVAILABLE, ...)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's own retries, set in the channel's service config: a call that ends with one of ``codes`` is sent again
    after a random pause of up to ``initial_backoff_s``, the bound growing by ``multiplier`` up to ``max_backoff_s``
    (gRPC's exponential backoff with full jitter), ``max_attempts`` tries in all (gRPC allows 5 at most), and never
    past the call's deadline. Rerank and Info are idempotent, so a retry is safe.

    The defaults retry UNAVAILABLE (a gateway restarting, unreachable, or with no Triton endpoint able to serve)
    and RESOURCE_EXHAUSTED (refused at admission, before any work was done). With a target naming several
    gateways (``dns:///reranker:50051``, ``ipv4:10.0.0.1:50051,10.0.0.2:50051``) calls are spread over them
    (round_robin) and a retry reaches another one."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    codes: tuple[str, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts must be 2 to 5 (gRPC's bound); got {self.max_attempts}")
        if self.initial_backoff_s <= 0 or self.max_backoff_s < self.initial_backoff_s or self.multiplier < 1:
            raise ValueError("backoff must be > 0, max_backoff_s >= initial_backoff_s and multiplier >= 1")
        unknown = [code for code in self.codes if code not in grpc.StatusCode.__members__]
        if unknown or not self.codes:
            raise ValueError(f"codes must be gRPC status names; got {list(self.codes)}")

    def service_config(self) -> str:
        """The gRPC service config (JSON) that applies this policy to every method of reranker.v1.Reranker."""
        policy = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff_s:.3f}s",
            "maxBackoff": f"{self.max_backoff_s:.3f}s",
            "backoffMultiplier": self.multiplier,
            "retryableStatusCodes": list(self.codes),
        }
        service = reranker_pb2.DESCRIPTOR.services_by_name["Reranker"].full_name
        return json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                           "methodConfig": [{"name": [{"service": service}], "retryPolicy": policy}]})


def _channel_args(max_message_bytes: int, retry: RetryPolicy | None) -> list[tuple[str, object]]:
    args: list[tuple[str, object]] = [("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes)]
    if retry is None:
        return args + [("grpc.enable_retries", 0)]
    # A request is retried only while gRPC still holds it: let it hold the largest one the client sends.
    return args + [("grpc.enable_retries", 1), ("grpc.service_config", retry.service_config()),
                   ("grpc.per_rpc_retry_buffer_size", max_message_bytes)]


def _credentials(root_certificates: str | Path | None, client_cert: str | Path | None, client_key: str | Path | None):
    read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
    return grpc.ssl_channel_credentials(read(root_certificates), read(client_key), read(client_cert))


def _truncation(truncate: bool, truncation: str | None, split: bool) -> int:
    """The request's Truncation from rerank's arguments: ``truncation`` ("end", "none" or "split"), or
    ``split=True``, else ``truncate`` (True: "end", False: "none", as before)."""
    if split:
        if truncation not in (None, "split"):
            raise ValueError(f"split=True contradicts truncation={truncation!r}")
        truncation = "split"
    if truncation is None:
        return reranker_pb2.TRUNCATION_END if truncate else reranker_pb2.TRUNCATION_NONE
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}; got {truncation!r}")
    if not truncate and truncation != "none":
        raise ValueError(f"truncate=False contradicts truncation={truncation!r}")
    return TRUNCATIONS[truncation]


def _options(truncate: bool, truncation: str | None, split: bool, model: str | None, priority: str = "interactive",
             instruction: str | None = None, **windows: int | None) -> dict:
    """The RerankRequest fields every slice of one rerank call shares (checked once, before any call)."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}")
    options = {"truncation": _truncation(truncate, truncation, split), "model": model or "", "priority": PRIORITIES[priority],
               "instruction": instruction or ""}
    return options | {name: value for name, value in windows.items() if value is not None}


def _request(query: str, documents: Sequence[str], top_k: int | None, return_documents: bool, raw_scores: bool,
             options: dict) -> reranker_pb2.RerankRequest:
    return reranker_pb2.RerankRequest(
        query=query, documents=list(documents), top_k=top_k, return_documents=return_documents, raw_scores=raw_scores,
        **options,
    )


def _window(r: reranker_pb2.RankedDocument) -> Window | None:
    w = r.best_window
    return Window(w.index, w.start_char, w.end_char) if r.HasField("best_window") else None


def _results(response: reranker_pb2.RerankResponse, offset: int = 0) -> list[RerankResult]:
    return [
        RerankResult(r.index + offset, r.score, r.document if r.HasField("document") else None, r.logit, _window(r))
        for r in response.results
    ]


def _merge(parts: list[list[RerankResult]], top_k: int | None) -> list[RerankResult]:
    """Merge rankings of consecutive slices as the server orders one: by logit, best first, ties by
    lower index. Never by score: float32 sigmoids of different high logits are all exactly 1.0."""
    merged = sorted((r for part in parts for r in part), key=lambda r: (-r.logit, r.index))
    return merged if top_k is None else merged[:top_k]


class _Base:
    """Shared by both clients. ``split_large_requests``: send candidate lists longer than the server's
    max_documents_per_request (learnt from Info on first use) as several requests and merge the rankings.
    ``retry``: how failed calls are retried (``RetryPolicy()``, the default; None: never)."""

    _grpc = grpc  # the module whose channels the client uses: grpc (blocking) or grpc.aio

    def __init__(self, target: str = "localhost:50051", *, api_key: str | None = None, timeout: float | None = 60.0,
                 tls: bool = False, root_certificates: str | Path | None = None, client_cert: str | Path | None = None,
                 client_key: str | Path | None = None, max_message_bytes: int = 64 * 1024 * 1024,
                 split_large_requests: bool = True, retry: RetryPolicy | None = RetryPolicy()) -> None:
        self.target = target
        self.timeout = timeout
        self.split_large_requests = split_large_requests
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        options = _channel_args(max_message_bytes, retry)
        if tls or root_certificates or client_cert:
            credentials = _credentials(root_certificates, client_cert, client_key)
            self.channel = self._grpc.secure_channel(target, credentials, options)
        else:
            self.channel = self._grpc.insecure_channel(target, options)
        self.stub = reranker_pb2_grpc.RerankerStub(self.channel)
        self._max_documents: int | None = None

    def _slices(self, n: int) -> list[tuple[int, int]]:
        size = (self._max_documents if self.split_large_requests else None) or max(n, 1)
        return [(start, min(start + size, n)) for start in range(0, n, size)] or [(0, 0)]


class RerankerClient(_Base):
    """Blocking client. Thread-safe; reuse one per process."""

    def __enter__(self) -> "RerankerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise RerankerError(exc.code(), exc.details()) from exc

    def info(self) -> reranker_pb2.InfoResponse:
        """Model, dtype, max input length and every limit of the service."""
        info = self._call(self.stub.Info, reranker_pb2.InfoRequest())
        self._max_documents = info.limits.max_documents_per_request or None
        return info

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
               raw_scores: bool = False, truncate: bool = True, model: str | None = None, *,
               truncation: str | None = None, split: bool = False, window_tokens: int | None = None,
               window_overlap_tokens: int | None = None, max_windows: int | None = None,
               max_document_tokens: int | None = None, priority: str = "interactive",
               instruction: str | None = None) -> list[RerankResult]:
        """Documents ranked best first (``index`` = position in ``documents``); ``model``: a served
        model's name or hub id (default: the server's default model).

        A document longer than the model's input is cut at its end (``truncation="end"``, the default),
        at its start (``"start"``: its last tokens kept), refused (``"none"``, or ``truncate=False``) or scored window by window and ranked by its best
        (``"split"``, or ``split=True``; ``window_tokens``, ``window_overlap_tokens`` and ``max_windows``
        shape the windows, server defaults when None; each result's ``best_window`` names the winner).
        ``max_document_tokens`` cuts every document to that many tokens first (Cohere's max_tokens_per_doc).
        ``priority="batch"`` marks work that may wait for interactive calls (it is never starved).
        ``instruction``: an LLM reranker's task instruction (Qwen3-Reranker's ``<Instruct>``; None: the model's
        default); a cross-encoder refuses one (INVALID_ARGUMENT)."""
        options = _options(truncate, truncation, split, model, priority, instruction, window_tokens=window_tokens,
                           window_overlap_tokens=window_overlap_tokens, max_windows=max_windows,
                           max_document_tokens=max_document_tokens)
        if self._max_documents is None and self.split_large_requests:
            self.info()
        parts = [
            _results(self._call(self.stub.Rerank, _request(query, documents[a:b], top_k, return_documents, raw_scores, options)), a)
            for a, b in self._slices(len(documents))
        ]
        return _merge(parts, top_k)


class AsyncRerankerClient(_Base):
    """asyncio client: ``async with AsyncRerankerClient(target) as c: await c.rerank(...)``."""

    _grpc = grpc.aio

    async def __aenter__(self) -> "AsyncRerankerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method, request):
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise RerankerError(exc.code(), exc.details()) from exc

    async def info(self) -> reranker_pb2.InfoResponse:
        info = await self._call(self.stub.Info, reranker_pb2.InfoRequest())
        self._max_documents = info.limits.max_documents_per_request or None
        return info

    async def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = False,
                     raw_scores: bool = False, truncate: bool = True, model: str | None = None, *,
                     truncation: str | None = None, split: bool = False, window_tokens: int | None = None,
                     window_overlap_tokens: int | None = None, max_windows: int | None = None,
                     max_document_tokens: int | None = None, priority: str = "interactive",
                     instruction: str | None = None) -> list[RerankResult]:
        """As ``RerankerClient.rerank``."""
        import asyncio

        options = _options(truncate, truncation, split, model, priority, instruction, window_tokens=window_tokens,
                           window_overlap_tokens=window_overlap_tokens, max_windows=max_windows,
                           max_document_tokens=max_document_tokens)
        if self._max_documents is None and self.split_large_requests:
            await self.info()
        slices = self._slices(len(documents))
        responses = await asyncio.gather(*(
            self._call(self.stub.Rerank, _request(query, documents[a:b], top_k, return_documents, raw_scores, options))
            for a, b in slices
        ))
        return _merge([_results(r, a) for r, (a, _) in zip(responses, slices)], top_k)
