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


async def read_body(request: web.Request) -> bytes:
    """The request's body, joined once from the chunks aiohttp hands over (one chunk is used as it is); a body
    over ``client_max_size`` (--max-body-mb) raises 413 as aiohttp's ``request.read()`` does. That method grows
    a bytearray chunk by chunk and then copies it into bytes: two more copies of a tensor body."""
    limit = request.client_max_size
    stream = request.content
    if limit:  # as request.read() does: compressed bodies decode in large chunks
        stream.set_read_chunk_size(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if limit and size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
