"""What every REST handler shares: the app's typed keys, the request's keys and the JSON response."""

from __future__ import annotations

from aiohttp import web

from runtime.auth import TokenTable
from runtime.codecs.v2_json import dumps
from runtime.dataplane import DataPlane
from runtime.repository import LoadedModel
from runtime.settings import Settings
from runtime.state import ServerState

STATE = web.AppKey("state", ServerState)
DATAPLANE = web.AppKey("dataplane", DataPlane)
# --auth-tokens-file and whether the repository API is open, for the protocols outside aiohttp (gRPC)
TOKENS = web.AppKey("tokens", TokenTable)
ADMIN_ENABLED = web.AppKey("admin enabled", bool)

STARTED = web.RequestKey("started", float)  # time.perf_counter() at arrival
DEADLINE = web.RequestKey("deadline", float | None)  # loop time after which the request gets 504; None: none
MODEL = web.RequestKey("model", str)  # the model name, for the access log


def json_response(value: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(value), status=status, content_type="application/json", headers=headers)


def dataplane(request: web.Request) -> DataPlane:
    return request.app[DATAPLANE]


def settings(request: web.Request) -> Settings:
    return request.app[STATE].settings


def named(request: web.Request) -> tuple[str, str | None]:
    """``{name}`` and ``{version}`` from the path (recorded for the access log)."""
    name = request.match_info["name"]
    request[MODEL] = name
    return name, request.match_info.get("version")


def model(request: web.Request, name: str, version: str | None = None) -> LoadedModel:
    """The request's one model lookup: ready, or NotFound / Unavailable."""
    return located(request, request.app[DATAPLANE], name, version)


def located(request: web.Request, plane: DataPlane, name: str, version: str | None) -> LoadedModel:
    """``model`` for a handler that holds the data plane already (one app lookup per request)."""
    request[MODEL] = name
    return plane.model(name, version)
