"""The gateway's HTTP server: the routes of the HTTP APIs (``cohere``, ``tei_http``), plus ``/health``
and ``/openapi.json``.

Shared by every route, so each API module only converts: the API key (``Authorization: Bearer``, as
gRPC), the body limit (``max_message_bytes``, 413), JSON parsing and validation against the route's
request model (``null`` is the same as absent; unknown fields are ignored, as the original APIs do),
the ``x-request-id`` header, and errors in the route's dialect (``Dialect``: Cohere/Jina ``{"message"}``
or TEI ``{"error", "error_type"}``, the status from server/ara_reranker_server/errors.py ANSWERS). A body that is not what
the API takes gets a 4xx naming the field, never a 500.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ara_reranker_server.api.calls import Calls, new_request_id
from ara_reranker_server.auth import DENIED, ApiKeys
from ara_reranker_server.errors import InvalidRequest, PayloadTooLarge, RerankerError, StartupError, answer_of
from ara_reranker_server.settings import Settings

__all__ = ["Dialect", "Lenient", "Route", "HttpApi", "start_http"]

log = logging.getLogger("ara_reranker_server.http")
OPEN_PATHS = ("/health", "/openapi.json")


class Dialect(Enum):
    """How an API writes its errors."""

    COHERE = "cohere"  # Cohere v1/v2 and Jina: {"message": ...}, status ANSWERS[...].http
    TEI = "tei"  # TEI: {"error": ..., "error_type": ...}, status ANSWERS[...].tei_http


class Lenient(BaseModel):
    """A request body: unknown fields ignored, ``null`` the same as absent."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


@dataclass(frozen=True)
class Route:
    """One HTTP endpoint: ``handler(body, request_id)`` returns the JSON to send and extra headers;
    ``body`` is the parsed ``request_model`` (None for GET)."""

    method: str
    path: str
    api: str  # the metrics' api label
    dialect: Dialect
    handler: Callable[[Any, str], Awaitable[tuple[Any, dict[str, str]]]]
    summary: str
    request_model: type[BaseModel] | None = None
    response_model: Any = None  # a pydantic model (or list[...] of one) describing the 200 body, for OpenAPI
    counted: str = "Rerank"  # the metrics' method label


def error_response(dialect: Dialect, exc: RerankerError, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    answer = answer_of(exc)
    if dialect is Dialect.TEI:
        status, body = answer.tei_http, {"error": str(exc), "error_type": answer.tei_type}
    else:
        status, body = answer.http, {"message": str(exc)}
    return web.json_response(body, status=status, headers={"x-request-id": request_id, **(headers or {})})


def validation_message(error: ValidationError) -> str:
    """The fields wrong in a body, named by their JSON path (``documents.2``), with pydantic's reason."""
    parts = []
    for e in error.errors()[:3]:
        where = ".".join(str(x) for x in e["loc"]) or "body"
        parts.append(f"{where}: {'missing' if e['type'] == 'missing' else e['msg']}")
    more = error.error_count() - len(parts)
    return "invalid request body: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


class HttpApi:
    """The aiohttp application serving ``routes``."""

    def __init__(self, calls: Calls, routes: list[Route], *, keys: ApiKeys | None, max_body_bytes: int,
                 healthy: Callable[[], bool], version: str) -> None:
        self.calls = calls
        self.routes = routes
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.healthy = healthy
        self.version = version
        self.openapi = openapi(routes, version)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._unknown_paths])
        for route in self.routes:
            app.router.add_route(route.method, route.path, self._handle(route))
        app.router.add_get("/health", self._health)
        app.router.add_get("/openapi.json", self._openapi)
        return app

    def _handle(self, route: Route):
        async def handle(request: web.Request) -> web.Response:
            started = time.perf_counter()
            request_id = new_request_id(request.headers.get("x-request-id"))
            if self.keys is not None and not self.keys.accept(request.headers.get("authorization")):
                self.calls.denied(route.api, route.counted)
                return error_response(route.dialect, DENIED, request_id, {"www-authenticate": "Bearer"})
            try:
                body = await self._body(request, route.request_model) if route.request_model is not None else None
            except RerankerError as exc:
                self.calls.refused(route.api, request_id, exc, started)
                return error_response(route.dialect, exc, request_id)
            try:
                payload, headers = await route.handler(body, request_id)
            except RerankerError as exc:  # already counted and logged by Calls
                return error_response(route.dialect, exc, request_id)
            return web.json_response(payload, headers={"x-request-id": request_id, **headers}, dumps=_dumps)

        return handle

    async def _body(self, request: web.Request, model: type[BaseModel]) -> BaseModel:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"request body over max_message_bytes={self.max_body_bytes}") from None
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequest(f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidRequest(f"request body must be a JSON object; got {type(data).__name__}")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(validation_message(exc)) from None

    async def _health(self, request: web.Request) -> web.Response:
        if self.healthy():
            return web.json_response({"status": "SERVING"})
        return web.json_response({"error": "no Triton endpoint has the default model ready", "error_type": "Unhealthy"},
                                 status=503)

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.openapi)

    @web.middleware
    async def _unknown_paths(self, request: web.Request, handler) -> web.StreamResponse:
        """aiohttp's own 404/405 (plain text) as JSON naming what is served."""
        try:
            return await handler(request)
        except web.HTTPNotFound:
            served = ", ".join(f"{r.method} {r.path}" for r in self.routes)
            return web.json_response({"message": f"no route {request.path}; served: {served}, GET /health, GET /openapi.json"},
                                     status=404)
        except web.HTTPMethodNotAllowed as exc:
            return web.json_response({"message": f"{request.method} not allowed on {request.path}; use {', '.join(sorted(exc.allowed_methods))}"},
                                     status=405, headers={"allow": ",".join(sorted(exc.allowed_methods))})


def _dumps(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def openapi(routes: list[Route], version: str) -> dict:
    """The OpenAPI 3.1 description of the HTTP API, from the routes' pydantic models."""
    from pydantic import TypeAdapter
    from pydantic.json_schema import models_json_schema

    models = [m for r in routes for m in (r.request_model,) if m is not None]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    schemas = dict(top.get("$defs", {}))
    paths: dict[str, dict] = {}
    error = {
        Dialect.COHERE: {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
        Dialect.TEI: {"type": "object", "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
                      "required": ["error", "error_type"]},
    }
    for route in routes:
        operation: dict[str, Any] = {"summary": route.summary, "operationId": route.method.lower() + route.path.replace("/", "_")}
        if route.request_model is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{route.request_model.__name__}"}}}}
        ok = {"description": "OK"}
        if route.response_model is not None:
            schema = TypeAdapter(route.response_model).json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            ok["content"] = {"application/json": {"schema": schema}}
        operation["responses"] = {"200": ok, "4XX": {"description": "The request is wrong (the body names what)",
                                                     "content": {"application/json": {"schema": error[route.dialect]}}},
                                  "5XX": {"description": "The service could not answer",
                                          "content": {"application/json": {"schema": error[route.dialect]}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/health"] = {"get": {"summary": "200 while the default model is served, else 503", "operationId": "health",
                                "responses": {"200": {"description": "serving"}, "503": {"description": "not serving"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ARA reranker gateway: HTTP rerank APIs", "version": version},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
    }


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(Path(settings.tls_client_ca)))
    return context


async def start_http(api: HttpApi, settings: Settings) -> tuple[web.AppRunner, int]:
    """Serve ``api`` on ``settings.http_listen`` (TLS as the gRPC server); returns the runner and the port."""
    runner = web.AppRunner(api.app(), access_log=None, handle_signals=False, shutdown_timeout=settings.grace_period_s)
    await runner.setup()
    host, _, port = settings.http_listen.rpartition(":")
    site = web.TCPSite(runner, host or "0.0.0.0", int(port), ssl_context=_ssl_context(settings))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {settings.http_listen} (http_listen): {exc}") from None
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, bound
