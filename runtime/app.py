"""The aiohttp application factory: routes, middleware, and the load/close lifecycle.

``create_app(settings)`` builds the app; its cleanup context finds the models, loads them in the
background (liveness answers at once, readiness once every model is warmed up), polls the repository
in poll mode and, at shutdown, stops the batchers, closes the engines and the thread pool. Middleware,
outermost first: CORS (``runtime/cors.py``; answers preflights), errors (turns ``ModelportError`` into
``{"error": msg}`` with its status and headers, any other exception into a generic 500 with the
traceback in the log only, and writes the access log line), then bearer-token authentication
(``runtime/auth.py``) against the scope ``ROUTE_SCOPES`` gives the matched route.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from runtime.auth import Scope, TokenTable, auth_middleware, read_tokens
from runtime.batching import Batcher
from runtime.control import ModelControl
from runtime.cors import cors_middleware
from runtime.engines import Engine, EngineOptions
from runtime.errors import ModelportError
from runtime.handlers import health, page, repository_api, simple, v2
from runtime.handlers.common import (
    CONTROL,
    DEADLINE,
    EXECUTOR,
    METRICS,
    MODEL,
    READY,
    REPOSITORY,
    SETTINGS,
    STARTED,
    json_response,
)
from runtime.metrics import Metrics
from runtime.repository import ModelVersion, Repository, find_models
from runtime.settings import Settings

log = logging.getLogger("runtime")
access_log = logging.getLogger("runtime.access")

DEFAULT_MERGE_ROWS = 256  # batching cap for models that accept any number of rows (PMML's -1)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The scope each route needs when --auth-tokens-file is given, by the route's path pattern. A route not
# listed needs "infer", so a new route is protected unless someone decides otherwise here.
ROUTE_SCOPES: dict[str, Scope] = {
    "/": Scope.OPEN,  # the static try-it page; the API calls it makes carry the token typed into it
    "/v2/health/live": Scope.OPEN,
    "/v2/health/ready": Scope.OPEN,
    "/v2/models/{name}/ready": Scope.OPEN,  # V2's model readiness belongs to its health API
    "/v2/models/{name}/versions/{version}/ready": Scope.OPEN,
    "/metrics": Scope.OPEN,  # Scope.INFER with --auth-metrics
    "/v2/repository/index": Scope.ADMIN,
    "/v2/repository/models/{name}/load": Scope.ADMIN,
    "/v2/repository/models/{name}/unload": Scope.ADMIN,
}


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request[STARTED] = started
    timeout = request.app[SETTINGS].request_timeout
    if timeout > 0:
        request[DEADLINE] = asyncio.get_running_loop().time() + timeout
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ModelportError as exc:
        status = exc.status
        return _error_response(exc.status, str(exc), exc.headers or None)
    except web.HTTPException as exc:
        status = exc.status
        return _error_response(exc.status, _http_message(request, exc), _passthrough_headers(exc))
    except (HttpProcessingError, web.RequestPayloadError) as exc:  # raised while reading a malformed body
        status = 400
        return _error_response(400, f"malformed request: {_aiohttp_message(exc)}")
    except asyncio.CancelledError:
        status = 499  # the client went away; nothing is sent
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error_response(500, "internal server error (see the server log)")
    finally:
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "%s %s model=%s status=%d duration_ms=%.2f",
                request.method,
                request.path,
                request.get(MODEL, "-"),
                status,
                (time.perf_counter() - started) * 1e3,
            )


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no route {request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"{request.method} is not allowed on {request.path}; use {', '.join(sorted(exc.allowed_methods))}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[SETTINGS].max_body_mb
        return f"the request body is larger than the {limit} MiB limit (--max-body-mb)"
    return exc.reason or f"HTTP {exc.status}"


def _aiohttp_message(exc: Exception) -> str:
    """aiohttp's own text without its "400, message:" prefix, on one line."""
    text = exc.message if isinstance(exc, HttpProcessingError) and exc.message else str(exc)
    text = re.sub(r"^\d{3}, message:\s*", "", text.strip())
    return " ".join(text.split()) or type(exc).__name__


def _passthrough_headers(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def engine_options(settings: Settings) -> EngineOptions:
    return EngineOptions(
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        graph_optimization=settings.graph_optimization,
    )


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Discover the models, then load them in the background: the server answers liveness (and 503 for
    readiness and inference) while models load. Poll mode then rescans the repository. At cleanup stop
    the poller and the batchers and close the engines."""
    settings = app[SETTINGS]
    repository = app[REPOSITORY]
    if settings.model_control_mode == "explicit":  # only --load-model at start; an unknown one stops it
        repository.discover(settings.load_models, allow_partial=settings.allow_partial)
    else:  # nothing to serve (bad repository, unknown --model) stops the start here
        repository.discover(allow_partial=settings.allow_partial)
    # one thread per model instance (twice: a reload runs the new beside the old), plus two for
    # loading and image decoding; threads start only when needed
    versions = sum(len(v) for v in find_models(repository.root).values())
    workers = settings.instances * 2 * max(versions, 1) + 2
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelport")
    for entry in repository.entries():
        app[METRICS].model(entry.name, entry.version)  # every model appears in /metrics from the start
    loading = asyncio.create_task(_load_models(app), name="load models")
    yield
    app[READY]["ready"] = False
    loading.cancel()
    await asyncio.gather(loading, return_exceptions=True)
    await asyncio.gather(*(e.batcher.stop() for e in repository.entries() if e.batcher is not None))
    repository.close()
    app[EXECUTOR].shutdown(wait=False, cancel_futures=True)


async def _load_models(app: web.Application) -> None:
    """Load each model in the thread pool, one at a time; each serves as soon as it is warmed up.

    A failure without ``--allow-partial`` records exit status 1 and stops the server (SIGTERM to
    ourselves, so aiohttp shuts down the usual way)."""
    settings = app[SETTINGS]
    repository = app[REPOSITORY]
    loop = asyncio.get_running_loop()
    for entry in repository.entries():
        engine, error = await loop.run_in_executor(app[EXECUTOR], repository.build, entry)
        if engine is not None:
            entry.batcher = _batcher(app, entry, engine)
            entry.batcher.start()
        repository.install(entry, engine, error)
        if error is not None and settings.allow_partial:
            log.error("model %s version %s not loaded (serving the others): %s", entry.name, entry.version, error)
        elif error is not None:
            log.error("cannot start: %s", error)
            app[READY]["exit_status"] = 1
            signal.raise_signal(signal.SIGTERM)
            return
    app[READY]["ready"] = True
    if settings.model_control_mode == "poll":
        for name in repository.models:
            app[CONTROL].remember(name)
        await app[CONTROL].poll_forever(settings.repository_poll_secs)


def _batcher(app: web.Application, entry: ModelVersion, engine: Engine) -> Batcher:
    settings = app[SETTINGS]
    manifest = engine.manifest
    model_cap = manifest.max_batch_size if manifest.max_batch_size > 0 else None
    max_batch = settings.max_batch_size or model_cap or DEFAULT_MERGE_ROWS
    if model_cap is not None:
        max_batch = min(max_batch, model_cap)
    return Batcher(
        engine,
        app[METRICS].model(entry.name, entry.version),
        app[EXECUTOR],
        max_batch=max_batch,
        delay_s=settings.batch_delay_ms / 1000.0,
        max_queue=settings.max_queue,
        instances=settings.instances,
    )


async def _on_shutdown(app: web.Application) -> None:
    app[READY]["ready"] = False  # load balancers stop sending while in-flight requests finish


def _attach(app: web.Application) -> Callable[[ModelVersion, Engine], None]:
    def attach(entry: ModelVersion, engine: Engine) -> None:
        entry.batcher = _batcher(app, entry, engine)
        entry.batcher.start()

    return attach


async def _detach(entry: ModelVersion) -> None:
    await entry.batcher.stop()  # type: ignore[union-attr]


def route_scope(settings: Settings) -> Callable[[web.Request], Scope]:
    scopes = dict(ROUTE_SCOPES)
    if settings.auth_metrics:
        scopes["/metrics"] = Scope.INFER

    def scope_of(request: web.Request) -> Scope:
        resource = request.match_info.route.resource
        return scopes.get(resource.canonical, Scope.INFER) if resource is not None else Scope.INFER

    return scope_of


def create_app(settings: Settings) -> web.Application:
    """The app for ``settings``; raises ``runtime.auth.TokenFileError`` for a bad --auth-tokens-file."""
    tokens = read_tokens(settings.auth_tokens_file) if settings.auth_tokens_file else TokenTable()
    admin_enabled = tokens.has_admin or settings.allow_unauthenticated_admin
    if not tokens.enabled:
        log.warning("no --auth-tokens-file: every route is open to anyone who can reach the port")
    if settings.allow_unauthenticated_admin and not tokens.has_admin:
        log.warning("--allow-unauthenticated-admin: the repository API (load/unload) is open without a token")
    elif not admin_enabled:  # explicit mode without the API can only serve its --load-model set: say it louder
        (log.warning if settings.model_control_mode == "explicit" else log.info)(
            "the repository API is off: no admin token in --auth-tokens-file (or --allow-unauthenticated-admin)"
        )
    middlewares = [error_middleware, auth_middleware(tokens, route_scope(settings), admin_enabled)]
    if settings.cors_origins:
        middlewares.insert(0, cors_middleware(settings.cors_origins))
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[SETTINGS] = settings
    app[REPOSITORY] = Repository(
        settings.repository,
        engine_options(settings),
        settings.models,
        all_versions=settings.all_versions,
        model_name=settings.model_name,
    )
    app[CONTROL] = ModelControl(
        app[REPOSITORY],
        lambda: app[EXECUTOR],
        _attach(app),
        _detach,
        drain_timeout=settings.request_timeout or 60.0,
    )
    app[METRICS] = Metrics()
    app[READY] = {"ready": False, "exit_status": 0}
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    add_routes(app)
    return app


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v2/health/live", health.live)
    r.add_get("/v2/health/ready", health.ready)
    r.add_get("/v2", health.server_metadata)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r.add_get(prefix, v2.model_metadata)
        r.add_get(prefix + "/ready", health.model_ready)
        r.add_post(prefix + "/infer", v2.model_infer)
    r.add_get("/metrics", health.metrics)
    r.add_post("/v2/repository/index", repository_api.index)
    r.add_post("/v2/repository/models/{name}/load", repository_api.load)
    r.add_post("/v2/repository/models/{name}/unload", repository_api.unload)
    r.add_get("/", page.index)
    _add_simple_routes(app)
    _add_openapi_routes(app)


def _add_simple_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/models", simple.list_models)
    r.add_get("/api/models/{name}", simple.model_info)
    r.add_post("/api/models/{name}/predict", simple.predict)
    r.add_post("/api/models/{name}/image", simple.image)
    r.add_post("/predict", simple.predict)
    r.add_post("/predict/image", simple.image)


def _add_openapi_routes(app: web.Application) -> None:
    """``/openapi.json`` and ``/docs`` exist only when ``runtime/openapi.py`` provides them."""
    try:
        from runtime import openapi
    except ImportError:
        return
    document = getattr(openapi, "OPENAPI", None)
    page = getattr(openapi, "DOCS_HTML", None)
    if not isinstance(document, dict) or not isinstance(page, str):
        return
    body = json_response(document).body

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
