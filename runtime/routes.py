"""The REST route table: one row per route, feeding both the router and the OpenAPI document.

Each row binds a method and path to its handler, to the operation that documents it
(``runtime.openapi.OPERATIONS``) and to the scope a bearer token needs for it with --auth-tokens-file
(``runtime/auth.py``). So a route cannot be registered undocumented, nor documented and missing, nor
added without a decision on who may call it (the default is ``infer``). ``/openapi.json`` and
``/docs`` serve the document built from this very table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from runtime import openapi
from runtime.auth import Scope, admin_closed
from runtime.handlers import health, page, repository_api, simple, v2
from runtime.handlers.common import json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    operation: str  # operationId in runtime.openapi.OPERATIONS
    scope: Scope = Scope.INFER  # what a token needs (with --auth-tokens-file)


async def _openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_OPENAPI_BODY, content_type="application/json")


async def _docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_HTML, content_type="text/html")


MODEL = "/v2/models/{name}"
VERSION = "/v2/models/{name}/versions/{version}"

OPEN, ADMIN = Scope.OPEN, Scope.ADMIN
ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", health.live, "v2_live", OPEN),
    Route("GET", "/v2/health/ready", health.ready, "v2_ready", OPEN),
    Route("GET", "/v2", health.server_metadata, "v2_server_metadata"),
    # inference first among the /v2/models/{name}... routes: aiohttp tries them in this order on every request
    Route("POST", MODEL + "/infer", v2.model_infer, "v2_model_infer"),
    Route("POST", VERSION + "/infer", v2.model_infer, "v2_model_version_infer"),
    Route("GET", MODEL, v2.model_metadata, "v2_model_metadata"),
    Route("GET", VERSION, v2.model_metadata, "v2_model_version_metadata"),
    # V2's model readiness belongs to its health API
    Route("GET", MODEL + "/ready", health.model_ready, "v2_model_ready", OPEN),
    Route("GET", VERSION + "/ready", health.model_ready, "v2_model_version_ready", OPEN),
    Route("GET", "/api/models", simple.list_models, "simple_models"),
    Route("GET", "/api/models/{name}", simple.model_info, "simple_model_info"),
    Route("POST", "/api/models/{name}/predict", simple.predict, "simple_model_predict"),
    Route("POST", "/api/models/{name}/image", simple.image, "simple_model_image"),
    Route("POST", "/predict", simple.predict, "simple_predict"),
    Route("POST", "/predict/image", simple.image, "simple_image"),
    Route("POST", "/v2/repository/index", repository_api.index, "repository_index", ADMIN),
    Route("POST", "/v2/repository/models/{name}/load", repository_api.load, "repository_load", ADMIN),
    Route("POST", "/v2/repository/models/{name}/unload", repository_api.unload, "repository_unload", ADMIN),
    Route("GET", "/metrics", health.metrics, "metrics", OPEN),  # INFER with --auth-metrics
    Route("GET", "/openapi.json", _openapi_json, "openapi"),
    Route("GET", "/docs", _docs, "docs"),
    # the try-it page loads open; the API calls it makes carry the token typed into it
    Route("GET", "/", page.index, "page", OPEN),
)

OPENAPI = openapi.document((r.method, r.path, r.operation) for r in ROUTES)
DOCS_HTML = openapi.render_docs(OPENAPI)
_OPENAPI_BODY = json_response(OPENAPI).body


def add_routes(router: web.UrlDispatcher, routes: tuple[Route, ...] = ROUTES, closed_admin: bool = False) -> None:
    """Register ``routes``; ``closed_admin``: the admin routes answer 403 (the repository API is off)."""
    for route in routes:
        handler = admin_closed(route.handler) if closed_admin and route.scope is ADMIN else route.handler
        router.add_route(route.method, route.path, handler)
