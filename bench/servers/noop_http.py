"""The floor of HTTP on this machine: an aiohttp server on uvloop (as modelport runs) with no model.

``python noop_http.py PORT RESPONSE_FILE HEADER_LENGTH`` reads every POST's body whole, as a server must before
it can answer (joined once, as modelport does), and answers with the canned V2 binary response in RESPONSE_FILE
(its JSON header HEADER_LENGTH bytes long), without parsing the request. What is left is the transport's own cost per
request: the body's bytes through the kernel and aiohttp's parser, and the response back. bench/run.py adds its
latency to raw onnxruntime's to give the least any HTTP server could reach on the same request.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvloop
from aiohttp import web


def main(port: int, response: bytes, header_length: str) -> None:
    headers = {"Inference-Header-Content-Length": header_length}

    async def infer(request: web.Request) -> web.Response:
        chunks = []  # the body whole, joined once, as modelport reads it (runtime/handlers/common.py, read_body)
        while chunk := await request.content.readany():
            chunks.append(chunk)
        b"".join(chunks)
        return web.Response(body=response, content_type="application/octet-stream", headers=headers)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/{tail:.*}", infer)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]).read_bytes(), sys.argv[3])
