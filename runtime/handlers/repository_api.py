"""Triton's model repository extension over REST: index, load, unload.

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
from runtime.errors import BadRequest, ModelLoadError
from runtime.handlers.common import MODEL, STATE, json_response


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    payload = loads(raw, request.app[STATE].settings.max_json_depth)
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    return payload


def _require_explicit(request: web.Request, action: str) -> None:
    mode = request.app[STATE].settings.model_control_mode
    if mode != "explicit":
        raise BadRequest(
            f"explicit model {action} is not allowed in model control mode {mode!r} "
            "(start the server with --model-control-mode explicit)"
        )


def _check_parameters(payload: dict[str, Any]) -> None:
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest('"parameters" must be an object')
    unsupported = [k for k in parameters if k == "config" or k.startswith("file:")]
    if unsupported:
        raise BadRequest(f"load parameter {unsupported[0]!r} is not supported: put the model in the repository")


async def index(request: web.Request) -> web.Response:
    payload = await _body(request)
    ready = payload.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest('"ready" must be true or false')
    return json_response(request.app[STATE].control.index(ready_only=ready))


async def load(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    request[MODEL] = name
    _require_explicit(request, "load")
    _check_parameters(await _body(request))
    try:
        await request.app[STATE].control.load(name)
    except ModelLoadError as exc:
        raise BadRequest(str(exc)) from None
    return json_response({})


async def unload(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    request[MODEL] = name
    _require_explicit(request, "unload")
    payload = await _body(request)
    if not isinstance(payload.get("parameters", {}), dict):
        raise BadRequest('"parameters" must be an object')
    try:
        await request.app[STATE].control.unload(name)
    except ModelLoadError as exc:
        raise BadRequest(str(exc)) from None
    return json_response({})
