"""The gateway's HTTP server: the routes of the HTTP APIs (``cohere``, ``tei_http``, ``nim``, ``vllm``), plus
``/health`` and ``/openapi.json``.

Shared by every route, so each API module only converts: the API key (``Authorization: Bearer``, as
gRPC; ignored, whatever its value, while the gateway has no keys), the body limit (``max_message_bytes``,
413), JSON parsing and validation against the route's request model (``null`` is the same as absent;
unknown fields are ignored, as the original APIs do; a path parameter such as ``{model}`` overrides the
body's field of that name), the ``x-request-id`` header, the caller's trace context (``traceparent`` / ``tracestate``), and errors in the route's dialect (``Dialect``,
the status from server/ara_reranker_server/errors.py ANSWERS). A body that is not what the API takes gets a
4xx naming the field, never a 500.

Two APIs may share a path (TEI's and vLLM's ``POST /rerank``): the body picks the route (``Route.when``, a
field only that API's bodies have); a body that picks none goes to the path's first route.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ara_reranker_server.api.calls import PRIORITY, PRIORITY_HEADER, Calls, new_request_id, requested_priority
from ara_reranker_server.api.large_messages import is_large, json_chunks, loads_object
from ara_reranker_server.auth import DENIED, ApiKeys
from ara_reranker_server.errors import (
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RerankerError,
    StartupError,
    answer_of,
)
from ara_reranker_server.settings import Settings

__all__ = ["Dialect", "Lenient", "Route", "HttpApi", "start_http"]

log = logging.getLogger("ara_reranker_server.http")
OPEN_PATHS = ("/health", "/openapi.json")


class Dialect(Enum):
    """How an API writes its errors."""

    COHERE = "cohere"  # Cohere v1/v2 and Jina: {"message": ...}, status ANSWERS[...].http
    TEI = "tei"  # TEI: {"error": ..., "error_type": ...}, status ANSWERS[...].tei_http
    NIM = "nim"  # NVIDIA NIM: {"object": "error", "message", "detail"}, status .http, but 422 for its 400s (FastAPI's)
    VLLM = "vllm"  # vLLM: {"error": {"message", "type", "param", "code"}}, status .http


class Lenient(BaseModel):
    """A request body: unknown fields ignored, ``null`` the same as absent."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class Instructed(Lenient):
    """A rerank request body with this service's extra field ``instruction`` (every HTTP dialect takes it)."""

    instruction: str | None = Field(
        None, description="An LLM reranker's task instruction (Qwen3-Reranker's <Instruct>, bge-reranker-v2-gemma's "
                          "prompt; default: the model's own). A cross-encoder refuses one.")


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
    when: str | None = None  # where routes share a path: the body field that picks this one
    open: bool = False  # answered without an API key (health probes)


def error_response(dialect: Dialect, exc: RerankerError, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    answer = answer_of(exc)
    field = exc.field or ("model" if isinstance(exc, ModelNotFound) else None)
    if dialect is Dialect.TEI:
        status, body = answer.tei_http, {"error": str(exc), "error_type": answer.tei_type}
    elif dialect is Dialect.NIM:
        status = 422 if answer.http == 400 else answer.http
        body = {"object": "error", "message": str(exc), "detail": field or HTTPStatus(status).phrase}
    elif dialect is Dialect.VLLM:
        status = answer.http
        body = {"error": {"message": str(exc), "type": vllm_error_type(status), "param": field, "code": status}}
    else:
        status, body = answer.http, {"message": str(exc)}
    return web.json_response(body, status=status, headers={"x-request-id": request_id, **(headers or {})})


def vllm_error_type(status: int) -> str:
    """vLLM's error ``type``: the status phrase as a class name (400 ``BadRequestError``, 404 ``NotFoundError``)."""
    name = HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    return name if name.endswith("Error") else name + "Error"


def validation_field(error: ValidationError) -> str | None:
    """The body's top-level field that the first error is in (the message has the whole path)."""
    errors = error.errors()
    return str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else None


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
        shared: dict[tuple[str, str], list[Route]] = {}
        for route in self.routes:
            shared.setdefault((route.method, route.path), []).append(route)
        for (method, path), routes in shared.items():
            app.router.add_route(method, path, self._handle(routes))
        app.router.add_get("/health", self._health)
        app.router.add_get("/openapi.json", self._openapi)
        return app

    def _handle(self, routes: list[Route]):
        """The handler of one method and path: ``routes`` are the APIs served there, the first the default."""

        async def handle(request: web.Request) -> web.Response:
            started = time.perf_counter()
            request_id = new_request_id(request.headers.get("x-request-id"))
            route = routes[0]
            if not route.open and self.keys is not None and not self.keys.accept(request.headers.get("authorization")):
                self.calls.denied(route.api, route.counted)
                return error_response(route.dialect, DENIED, request_id, {"www-authenticate": "Bearer"})
            with self.calls.tracing.continued(request.headers):
                try:
                    PRIORITY.set(requested_priority(request.headers.get(PRIORITY_HEADER)))
                    body, large = None, False
                    if route.request_model is not None:
                        data, large = await self._json(request)
                        data.update(request.match_info)
                        route = next((r for r in routes if r.when is not None and r.when in data), route)
                        body = _validated(route.request_model, data)
                except RerankerError as exc:
                    self.calls.refused(route.api, request_id, exc, started)
                    return error_response(route.dialect, exc, request_id)
                try:
                    payload, headers = await route.handler(body, request_id)
                except RerankerError as exc:  # already counted, logged and traced by Calls
                    return error_response(route.dialect, exc, request_id)
            headers = {"x-request-id": request_id, **headers}
            if large:  # written and sent a slice at a time (large_messages.py)
                return await _send_in_chunks(request, await json_chunks(payload, _dumps), headers)
            return web.json_response(payload, headers=headers, dumps=_dumps)

        return handle

    async def _json(self, request: web.Request) -> tuple[dict[str, Any], bool]:
        """The body's object, and whether the body is large (read a slice at a time: large_messages.py)."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"request body over max_message_bytes={self.max_body_bytes}") from None
        try:
            data = await loads_object(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequest(f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidRequest(f"request body must be a JSON object; got {type(data).__name__}")
        return data, is_large(len(raw))

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
            served = ", ".join(dict.fromkeys(f"{r.method} {_template(r.path)}" for r in self.routes))
            return web.json_response({"message": f"no route {request.path}; served: {served}, GET /health, GET /openapi.json"},
                                     status=404)
        except web.HTTPMethodNotAllowed as exc:
            return web.json_response({"message": f"{request.method} not allowed on {request.path}; use {', '.join(sorted(exc.allowed_methods))}"},
                                     status=405, headers={"allow": ",".join(sorted(exc.allowed_methods))})


def _template(path: str) -> str:
    """A route's path as OpenAPI writes it: aiohttp's ``{model:.+}`` is ``{model}``."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def _validated(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(validation_message(exc), field=validation_field(exc)) from None


async def _send_in_chunks(request: web.Request, chunks: list[bytes], headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    response.content_type, response.charset = "application/json", "utf-8"
    response.content_length = sum(len(chunk) for chunk in chunks)
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def _dumps(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def openapi(routes: list[Route], version: str) -> dict:
    """The OpenAPI 3.1 description of the HTTP API, from the routes' pydantic models (routes sharing a path:
    one operation taking and answering any of their bodies)."""
    from pydantic import TypeAdapter
    from pydantic.json_schema import models_json_schema

    models = list(dict.fromkeys(r.request_model for r in routes if r.request_model is not None))
    _, top = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    schemas = dict(top.get("$defs", {}))

    def one_of(items: list[dict]) -> dict:
        unique = list({json.dumps(i, sort_keys=True): i for i in items}.values())
        return unique[0] if len(unique) == 1 else {"oneOf": unique}

    def answer(route: Route) -> dict:
        schema = TypeAdapter(route.response_model).json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        return schema

    shared: dict[tuple[str, str], list[Route]] = {}
    for route in routes:
        shared.setdefault((route.method, route.path), []).append(route)
    paths: dict[str, dict] = {}
    for (method, path), group in shared.items():
        template = _template(path)
        operation: dict[str, Any] = {"summary": " / ".join(r.summary for r in group),
                                     "operationId": method.lower() + re.sub(r"[^\w]", "_", template)}
        names = re.findall(r"\{(\w+)\}", template)
        if names:
            operation["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]
        bodies = [{"$ref": f"#/components/schemas/{r.request_model.__name__}"} for r in group if r.request_model is not None]
        if bodies:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": one_of(bodies)}}}
        ok: dict[str, Any] = {"description": "OK"}
        answers = [answer(r) for r in group if r.response_model is not None]
        if answers:
            ok["content"] = {"application/json": {"schema": one_of(answers)}}
        error = {"content": {"application/json": {"schema": one_of([ERROR_SCHEMAS[r.dialect] for r in group])}}}
        operation["responses"] = {"200": ok, "4XX": {"description": "The request is wrong (the body names what)", **error},
                                  "5XX": {"description": "The service could not answer", **error}}
        if all(r.open for r in group):
            operation["security"] = [{}]
        paths.setdefault(template, {})[method.lower()] = operation
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


_TEXT = {"type": "string"}
# Each dialect's error body, for OpenAPI.
ERROR_SCHEMAS: dict[Dialect, dict] = {
    Dialect.COHERE: {"type": "object", "properties": {"message": _TEXT}, "required": ["message"]},
    Dialect.TEI: {"type": "object", "properties": {"error": _TEXT, "error_type": _TEXT}, "required": ["error", "error_type"]},
    Dialect.NIM: {"type": "object", "properties": {"object": {"const": "error"}, "message": _TEXT, "detail": _TEXT},
                  "required": ["object", "message"]},
    Dialect.VLLM: {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "code"],
        "properties": {"message": _TEXT, "type": _TEXT, "param": {"type": ["string", "null"]}, "code": {"type": "integer"}}}}},
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
    site = web.TCPSite(runner, host or "0.0.0.0", int(port), ssl_context=_ssl_context(settings),
                       reuse_port=settings.reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {settings.http_listen} (http_listen): {exc}") from None
    bound = runner.addresses[0][1] if runner.addresses else int(port)
    return runner, bound
