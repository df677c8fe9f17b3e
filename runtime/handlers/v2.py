"""Open Inference Protocol (KServe V2) REST: model metadata and inference, adapters over the data plane.

Inference accepts JSON tensors and Triton's binary tensor data extension in both directions
(``runtime.codecs.v2_rest``); an encoded image sent as a BYTES tensor to a model's image input is
decoded by the data plane.
"""

from __future__ import annotations

from aiohttp import web

from runtime.codecs import v2_binary, v2_rest
from runtime.handlers.common import DATAPLANE, DEADLINE, STARTED, dataplane, json_response, located, named, read_body


async def model_metadata(request: web.Request) -> web.Response:
    return json_response(dataplane(request).model_metadata(*named(request)).as_dict())


async def model_infer(request: web.Request) -> web.Response:
    match = request.match_info
    version = match.get("version")
    plane = request.app[DATAPLANE]
    found = located(request, plane, match["name"], version)
    limits = plane.state.settings
    rest = v2_rest.decode_request(
        await read_body(request), request.headers.get(v2_binary.HEADER), limits.max_json_depth, limits.max_elements
    )
    started = request[STARTED]
    response = plane.infer_now(found, rest.request, started=started) or await plane.infer(
        found, rest.request, started=started, deadline=request[DEADLINE], version=version
    )
    body, content_type, headers = v2_rest.encode_response(response, rest)
    return web.Response(body=body, content_type=content_type, headers=headers)
