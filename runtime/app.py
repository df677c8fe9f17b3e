"""The aiohttp application factory: the route table, the middleware, the state's lifecycle.

``create_app(settings)`` builds the app around one ``ServerState`` and its ``DataPlane``; its cleanup
context opens the state (models found, then loaded in the background; poll mode then rescans) and
closes it at shutdown. Middleware, outermost first: CORS (``runtime/cors.py``; answers preflights),
errors (turns ``ModelportError`` into ``{"error": msg}`` with its status and headers, any other
exception into a generic 500 with the traceback in the log only, and writes the access log line),
then, with --auth-tokens-file, bearer-token authentication (``runtime/auth.py``) against the scope the
route table (``runtime/routes.py``) gives the matched route. Without a token file no request needs checking
except the admin routes, whose handlers are replaced by a 403 when the repository API is off, so the hot
path carries no authentication layer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from runtime.auth import Scope, TokenTable, auth_middleware, read_tokens
from runtime.cors import cors_middleware
from runtime.dataplane import DataPlane
from runtime.errors import ModelportError
from runtime.handlers.common import ADMIN_ENABLED, DATAPLANE, DEADLINE, MODEL, STARTED, STATE, TOKENS, json_response
from runtime.routes import ROUTES, add_routes
from runtime.settings import Settings
from runtime.state import ServerState

log = logging.getLogger("runtime")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


def error_middleware(state: ServerState) -> Middleware:
    """Errors mapped to status codes in one place, the request's arrival time and deadline (``STARTED``,
    ``DEADLINE``), the count of requests in progress, and the access log. Bound to the app's state when
    the app is built, so a request does not look it up."""
    timeout = state.settings.request_timeout

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        request[STARTED] = started
        request[DEADLINE] = asyncio.get_running_loop().time() + timeout if timeout > 0 else None
        status = 500
        state.in_progress += 1
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
            state.answered(request.method, request.path, request.get(MODEL, "-"), status, started)

    return middleware


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no route {request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"{request.method} is not allowed on {request.path}; use {', '.join(sorted(exc.allowed_methods))}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[STATE].settings.max_body_mb
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


def route_scope(settings: Settings) -> Callable[[web.Request], Scope]:
    """The scope a request needs when --auth-tokens-file is given: its route's, from the route table.

    Keyed by method and path (HEAD is GET's automatic twin); anything else, unknown routes and wrong
    methods included, needs ``infer``, so probing without a token learns nothing."""
    scopes = {(route.method, route.path): route.scope for route in ROUTES}
    if settings.auth_metrics:
        scopes["GET", "/metrics"] = Scope.INFER

    def scope_of(request: web.Request) -> Scope:
        resource = request.match_info.route.resource
        if resource is None:
            return Scope.INFER
        method = "GET" if request.method == "HEAD" else request.method
        return scopes.get((method, resource.canonical), Scope.INFER)

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
    state = ServerState(settings)
    middlewares: list = [error_middleware(state)]
    if tokens.enabled:  # without tokens only the admin routes are closed (or open): no check per request
        middlewares.append(auth_middleware(tokens, route_scope(settings), admin_enabled))
    if settings.cors_origins:
        middlewares.insert(0, cors_middleware(settings.cors_origins))
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[STATE] = state
    app[DATAPLANE] = DataPlane(state)
    app[TOKENS] = tokens
    app[ADMIN_ENABLED] = admin_enabled
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    add_routes(app.router, closed_admin=not tokens.enabled and not admin_enabled)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    await app[STATE].open()
    yield
    await app[STATE].close()


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].begin_stopping()  # readiness false while in-flight requests finish
