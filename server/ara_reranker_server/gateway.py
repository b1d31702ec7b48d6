"""The gateway process: wires settings, the served models (tokenizer, core, Triton scorer), the APIs
(server/ara_reranker_server/api/: reranker.v1 and tei.v1 over gRPC, Cohere/Jina/TEI/NIM/vLLM over HTTP), health, reflection, auth,
TLS and metrics together, and shuts down gracefully on SIGTERM.

``python -m ara_reranker_server.gateway --help`` lists every knob (also settable as RERANKER_* env vars).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ara_reranker_server import __version__
from ara_reranker_server.api import cohere, nim, reranker_grpc, tei_grpc, tei_http, vllm
from ara_reranker_server.api.calls import Calls
from ara_reranker_server.api.http import HttpApi, start_http
from ara_reranker_server.auth import ApiKeyInterceptor, ApiKeys
from ara_reranker_server.errors import StartupError
from ara_reranker_server.metrics import APIS, GatewayMetrics, serve_metrics
from ara_reranker_server.models import ModelRegistry, ServedModel, load_models
from ara_reranker_server.service_info import ServiceInfo, ServiceLimits
from ara_reranker_server.settings import Settings
from ara_reranker_server.tei.v1 import tei_pb2_grpc
from ara_reranker_server.tracing import NO_TRACING, Tracing, tracing_from_env

__all__ = ["Gateway", "main", "VERSION"]

VERSION = __version__
SERVICE_NAME = reranker_grpc.SERVICE_NAME
log = logging.getLogger("ara_reranker_server.gateway")

@dataclass
class Gateway:
    """A running gateway; ``await Gateway.start(settings)``, then ``await gateway.stop()``."""

    settings: Settings
    server: grpc.aio.Server
    models: ModelRegistry
    health: health.aio.HealthServicer
    metrics: GatewayMetrics
    port: int
    info: ServiceInfo
    metrics_server: object | None = None
    http_runner: object | None = None
    http_port: int | None = None
    tracing: Tracing = NO_TRACING

    @classmethod
    async def start(cls, settings: Settings, tracing: Tracing = NO_TRACING) -> "Gateway":
        """``tracing``: the OpenTelemetry tracing of every call (``tracing_from_env()``; off by default)."""
        models = load_models(settings, tracing)
        metrics = GatewayMetrics([m.name for m in models])
        default = models.default
        metrics.watch_admission(default.reranker.admission, default.reranker.token_admission)
        for model in models:
            metrics.watch_dispatch(model.name, model.reranker.dispatcher)
        if default.reranker.cache is not None:
            metrics.watch_cache(default.reranker.cache)
        info = ServiceInfo(
            models=[m.info for m in models], triton_endpoints=tuple(dict.fromkeys(e for m in models for e in m.scorer.endpoints)),
            limits=ServiceLimits.of(settings),
            version=VERSION, auth_required=bool(settings.api_keys),
        )
        calls = Calls(models, metrics, settings.log_documents, tracing)
        keys = ApiKeys(settings.api_keys) if settings.api_keys else None

        interceptors = []
        if keys is not None:
            interceptors.append(ApiKeyInterceptor(keys, lambda method: calls.denied(*_api_and_method(method))))
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ]
        # A worker shares its port with its siblings (the kernel spreads connections); any other gateway must find
        # the port free: gRPC's default, SO_REUSEPORT on, let a second one bind it and take half the calls silently.
        options.append(("grpc.so_reuseport", 1 if settings.reuse_port else 0))
        server = grpc.aio.server(interceptors=interceptors, options=options,
                                 maximum_concurrent_rpcs=settings.max_concurrent_rpcs)
        reranker_grpc.add_to_server(reranker_grpc.RerankerService(calls, info), server)
        tei_grpc.add_to_server(tei_grpc.TeiRerankService(calls, settings.max_documents), server)
        tei_pb2_grpc.add_InfoServicer_to_server(tei_grpc.TeiInfoService(calls, info, settings.tokenizer_threads), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, *tei_grpc.SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        port = _listen(server, settings)

        gateway = cls(settings, server, models, health_servicer, metrics, port, info, tracing=tracing)
        await gateway._track_health()
        if settings.metrics_listen:
            gateway.metrics_server = serve_metrics(settings.metrics_listen, metrics.registry)
        if settings.http_listen:
            healthy = lambda: models.default.scorer.any_healthy  # noqa: E731
            # TEI's /rerank before vLLM's: a body with neither texts nor documents gets TEI's answer.
            routes = (cohere.routes(calls) + tei_http.routes(calls, info, settings.tokenizer_threads) + vllm.routes(calls)
                      + nim.routes(calls, healthy))
            http = HttpApi(calls, routes, keys=keys, max_body_bytes=settings.max_message_bytes, healthy=healthy,
                           version=VERSION)
            gateway.http_runner, gateway.http_port = await start_http(http, settings)
        await server.start()
        for model in models:
            model.scorer.start()
        log.info("gateway listening on %s (port %d; HTTP %s), Triton %s, models %s (default %s), tracing %s", settings.listen,
                 port, f"port {gateway.http_port}" if gateway.http_port else "off", ",".join(info.triton_endpoints),
                 ",".join(m.name for m in models), default.name, tracing.describe())
        return gateway

    async def _track_health(self) -> None:
        """Per model: NOT_SERVING until a Triton endpoint has it ready, and again when none has. The
        server as a whole ("", the service names, tei.v1's services) follows the default model."""
        loop = asyncio.get_running_loop()
        whole = ("", SERVICE_NAME, *tei_grpc.SERVICE_NAMES)
        for name in (*whole, *(f"{SERVICE_NAME}/{m.name}" for m in self.models)):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

        def tracker(model: ServedModel):
            def changed(endpoint: str, up: bool) -> None:
                self.metrics.set_triton_health(endpoint, model.name, up)
                serving = health_pb2.HealthCheckResponse.SERVING if model.scorer.any_healthy else health_pb2.HealthCheckResponse.NOT_SERVING
                names = [f"{SERVICE_NAME}/{model.name}"] + (list(whole) if model is self.models.default else [])
                for name in names:
                    loop.create_task(self.health.set(name, serving))
                if up and not model.info.dtype:
                    loop.create_task(self._describe_model(model))
            return changed

        for model in self.models:
            for endpoint in model.scorer.endpoints:
                self.metrics.set_triton_health(endpoint, model.name, False)
            model.scorer.on_health_change(tracker(model))

    async def _describe_model(self, model: ServedModel) -> None:
        try:
            described = await model.scorer.model_info()
        except Exception as exc:
            log.warning("could not read Triton's config of model %s: %s", model.info.triton_model, exc)
            return
        model.info.dtype, model.info.engine = described.dtype, described.engine
        if self.settings.dispatch_window_chunks == -1 and described.instances > 1:
            # Fair by default: large requests' chunks may hold all instances but one; other calls find that one
            # free instead of waiting for a forward pass to end.
            chunks = (described.instances - 1) * len(self.settings.triton_endpoints)
            log.info("model %s has %d instances per endpoint: at most %d chunks of large requests at Triton",
                     model.name, described.instances, chunks)
            model.reranker.dispatcher.set_max_chunks(chunks)
        if described.max_batch_size and model.reranker.chunk_size > described.max_batch_size:
            # Triton refuses a request with more rows than max_batch_size: send smaller chunks instead.
            log.warning("chunk_size %d exceeds Triton's max_batch_size %d for model %s: using chunks of %d",
                        model.reranker.chunk_size, described.max_batch_size, model.name, described.max_batch_size)
            model.reranker.set_chunk_size(described.max_batch_size)
            if model is self.models.default:
                self.info.limits.chunk_size = described.max_batch_size

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, drain, refuse new calls, let calls in flight finish within the grace period, close."""
        await self.health.enter_graceful_shutdown()
        if self.settings.drain_s > 0:
            await asyncio.sleep(self.settings.drain_s)
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        # Stop accepting calls on both servers; those in flight may finish within the grace period.
        await asyncio.gather(self.server.stop(grace), *([self.http_runner.cleanup()] if self.http_runner is not None else []))
        for model in self.models:
            await model.scorer.close()
            model.reranker.tokenizer.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        await asyncio.to_thread(self.tracing.shutdown)  # export the last spans

def _api_and_method(full_method: str) -> tuple[str, str]:
    """/reranker.v1.Reranker/Rerank -> ("reranker.v1", "Rerank"); /tei.v1.Rerank/RerankStream ->
    ("tei.v1", "Rerank"): the metrics' api and method labels of a gRPC call."""
    service, _, method = full_method.lstrip("/").partition("/")
    api = service.rsplit(".", 1)[0]
    return api if api in APIS else "unknown", "Info" if method == "Info" else "Rerank"

def _listen(server: grpc.aio.Server, settings: Settings) -> int:
    try:
        if not settings.tls_cert:
            port = server.add_insecure_port(settings.listen)
        else:
            credentials = grpc.ssl_server_credentials(
                [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
                root_certificates=Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None,
                require_client_auth=bool(settings.tls_client_ca),
            )
            port = server.add_secure_port(settings.listen, credentials)
    except RuntimeError:  # grpcio raises where it once returned 0: the address is taken or not this host's
        port = 0
    if port == 0:
        raise StartupError(f"cannot listen on {settings.listen} (listen): the address is in use or not this host's")
    return port

class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, then the record's ``fields`` (request log) or its message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        fields = getattr(record, "fields", None)
        entry.update(fields if isinstance(fields, dict) else {"message": record.getMessage()})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)

def configure_logging(settings: Settings) -> None:
    """Text or JSON lines on stderr; the format is decided here only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])

async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    gateway = await Gateway.start(settings, tracing_from_env())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("gateway ready on %s", settings.listen)
    await stopping.wait()
    log.info("shutting down: NOT_SERVING, finishing calls in flight (grace %.1fs)", settings.grace_period_s)
    await gateway.stop()
    log.info("gateway stopped")

def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_args(argv)
    except ValueError as exc:  # a setting out of range, or limits that do not fit together
        print(f"reranker-gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if settings.workers != 1:
        from ara_reranker_server.workers import serve_workers

        return serve_workers(settings, list(sys.argv[1:] if argv is None else argv))
    # Tokenize in the calling thread, not on the tokenizers library's own thread pool: small requests run on the
    # event loop, large ones on lower-priority threads (tokenization.BACKGROUND_NICE); both need their own thread.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
