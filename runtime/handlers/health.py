"""Liveness, readiness, server metadata and ``/metrics``."""

from __future__ import annotations

from aiohttp import web

from runtime.handlers.common import METRICS, READY, REPOSITORY, SETTINGS, json_response, model_entry
from runtime.metrics import CONTENT_TYPE

SERVER_VERSION = "0.1.0"  # pyproject.toml's version
EXTENSIONS = ["binary_tensor_data", "metrics"]


async def live(request: web.Request) -> web.Response:
    return json_response({"live": True})


def server_ready(app: web.Application) -> bool:
    if not app[READY]["ready"]:
        return False
    if app[SETTINGS].allow_partial:
        return True
    return all(entry.ready for entry in app[REPOSITORY].entries())


async def ready(request: web.Request) -> web.Response:
    is_ready = server_ready(request.app)
    return json_response({"ready": is_ready}, status=200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return json_response({"name": "modelport", "version": SERVER_VERSION, "extensions": EXTENSIONS})


async def model_ready(request: web.Request) -> web.Response:
    entry = model_entry(request, request.match_info["name"], request.match_info.get("version"))
    body = {"name": entry.name, "version": entry.version, "ready": entry.ready}
    if not entry.ready:
        body["error"] = f"model {entry.name!r} version {entry.version} is not ready: {entry.error or 'loading'}"
    return json_response(body, status=200 if entry.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
