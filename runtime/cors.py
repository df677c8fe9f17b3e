"""Cross-origin requests from browser pages on other origins (``--cors-origin``, repeatable).

Off by default: without ``--cors-origin`` no CORS header is ever sent, so a page on another origin cannot
read any answer. With it, a request whose ``Origin`` is listed (or any origin, for ``*``) gets
``Access-Control-Allow-Origin`` naming that origin (and ``Vary: Origin``, so caches keep answers for
different origins apart), on errors too, so the page can read a 401 or 503. A preflight (``OPTIONS``
with ``Access-Control-Request-Method``) is answered here, before authentication: browsers never send
credentials on a preflight. Tokens travel in the ``Authorization`` header, never in cookies, so
``Access-Control-Allow-Credentials`` is never sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from runtime.codecs.v2_json import dumps

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Content-Encoding, Inference-Header-Content-Length"
EXPOSE_HEADERS = "Inference-Header-Content-Length, Retry-After, WWW-Authenticate"
MAX_AGE = "600"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cors_middleware(origins: tuple[str, ...]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    allowed = frozenset(origins)
    any_origin = "*" in allowed

    def permitted(origin: str | None) -> bool:
        return origin is not None and (any_origin or origin in allowed)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers and origin:
            if not permitted(origin):
                return web.Response(
                    body=dumps({"error": f"origin {origin!r} is not allowed (--cors-origin)"}),
                    status=403,
                    content_type="application/json",
                )
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": MAX_AGE,
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if permitted(origin):
            response.headers["Access-Control-Allow-Origin"] = origin  # type: ignore[assignment]
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")
        return response

    return cors
