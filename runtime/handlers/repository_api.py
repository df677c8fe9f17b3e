"""Triton's model repository extension over REST: index, load, unload (thin over the data plane).

``POST /v2/repository/index`` answers a JSON list of ``{"name", "version", "state", "reason"}`` (body
``{"ready": true}`` lists only READY versions). ``POST /v2/repository/models/{name}/load`` loads or
reloads the model as its ``config.pbtxt`` version policy says and answers once the new versions serve
(200 ``{}``) or with the reason it failed (400, old versions still serving). ``.../unload`` stops serving
it once the requests in flight have finished. Load and unload need ``--model-control-mode explicit``,
as in Triton. The admin scope these routes need is checked by the auth middleware.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runtime.codecs.v2_json import loads
from runtime.errors import BadRequest
from runtime.handlers.common import MODEL, STATE, dataplane, json_response, read_body


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    payload = loads(raw, request.app[STATE].settings.max_json_depth)
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    return payload


def _parameters(payload: dict[str, Any]) -> dict[str, Any]:
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest('"parameters" must be an object')
    return parameters


async def index(request: web.Request) -> web.Response:
    payload = await _body(request)
    ready = payload.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest('"ready" must be true or false')
    return json_response(dataplane(request).repository_index(ready_only=ready))


async def load(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    request[MODEL] = name
    parameters = _parameters(await _body(request))
    await dataplane(request).repository_load(name, list(parameters))
    return json_response({})


async def unload(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    request[MODEL] = name
    _parameters(await _body(request))
    await dataplane(request).repository_unload(name)
    return json_response({})
