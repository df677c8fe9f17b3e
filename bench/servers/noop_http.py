"""The floor of HTTP on this machine: an aiohttp server on uvloop (as modelport runs) with no model.

``python noop_http.py PORT RESPONSE_FILE HEADER_LENGTH [BUSY_US]`` reads every POST's body whole, as a server must
before it can answer (joined once, as modelport does), and answers with the canned V2 binary response in
RESPONSE_FILE (its JSON header HEADER_LENGTH bytes long), without parsing the request. What is left is the transport's
own cost per request: the body's bytes through the kernel and aiohttp's parser, and the response back. bench/run.py
adds its latency to raw onnxruntime's to give the least any HTTP server could reach on the same request.

With BUSY_US the handler first keeps the CPU busy that long, as a model's run would (bench/run.py passes raw
onnxruntime's batch-1 p50): the loopback round trip of a request that arrives after a client has waited milliseconds
costs more than one sent back to back (bench/notes.md, "Session 12"), so the latency floor of a model server is
measured at the model's pace, not the no-op's. It runs with modelport's allocator settings (``runtime.memory``):
without them glibc returns the body's pages on every request and faults them back in on the next, which the no-op,
with nothing else on its heap, suffered and no real server here did.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import uvloop
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from runtime import memory


def main(port: int, response: bytes, header_length: str, busy_s: float) -> None:
    headers = {"Inference-Header-Content-Length": header_length}

    async def infer(request: web.Request) -> web.Response:
        chunks = []  # the body whole, joined once, as modelport reads it (runtime/handlers/common.py, read_body)
        while chunk := await request.content.readany():
            chunks.append(chunk)
        b"".join(chunks)
        if busy_s:
            until = time.perf_counter() + busy_s
            while time.perf_counter() < until:
                pass
        return web.Response(body=response, content_type="application/octet-stream", headers=headers)

    memory.tune_malloc()
    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/{tail:.*}", infer)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    busy_us = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    main(int(sys.argv[1]), Path(sys.argv[2]).read_bytes(), sys.argv[3], busy_us / 1e6)
