"""Liveness, readiness, server metadata and ``/metrics``: adapters over the data plane."""

from __future__ import annotations

from aiohttp import web

from runtime.handlers.common import STATE, dataplane, json_response, named
from runtime.metrics import CONTENT_TYPE


async def live(request: web.Request) -> web.Response:
    return json_response({"live": dataplane(request).live()})


async def ready(request: web.Request) -> web.Response:
    is_ready = dataplane(request).ready()
    return json_response({"ready": is_ready}, status=200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return json_response(dataplane(request).server_metadata())


async def model_ready(request: web.Request) -> web.Response:
    status = dataplane(request).model_status(*named(request))
    body = {"name": status.name, "version": status.version, "ready": status.ready}
    if status.error is not None:
        body["error"] = status.error
    return json_response(body, status=200 if status.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[STATE].metrics.render(), headers={"Content-Type": CONTENT_TYPE})
