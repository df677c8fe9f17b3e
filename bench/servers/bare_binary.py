"""A bare aiohttp + onnxruntime server for V2 binary tensors: what a server with no features reaches on a large model.

``python bench/servers/bare_binary.py MODEL.onnx NAME PORT THREADS`` (run with .venv/serve's python).
No validation, metrics, logging, queue or batching. It reads the body whole (joined once, as modelport does),
parses the JSON header, takes the first input as a view of the raw bytes, runs onnxruntime and answers the
outputs as raw bytes. A request alone in the server runs on the event loop (no thread hand-off, as modelport's
lone requests); otherwise it goes straight to a pool of THREADS threads (modelport's default: two runs at once
for 2-thread runs), whose own queue holds the next requests. uvloop, as modelport and bench/servers/noop_http.py.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import uvloop
from aiohttp import web
from bare_aiohttp import session

from runtime import memory

HEADER = "Inference-Header-Content-Length"


def main() -> None:
    path, name, port, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    memory.tune_malloc()  # as modelport's main does
    model = session(path, threads)
    outputs = [o.name for o in model.get_outputs()]
    pool = ThreadPoolExecutor(max_workers=threads)
    in_flight = 0

    async def infer(request: web.Request) -> web.Response:
        nonlocal in_flight
        in_flight += 1
        try:
            chunks = []
            while chunk := await request.content.readany():
                chunks.append(chunk)
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            length = int(request.headers[HEADER])
            tensor = orjson.loads(body[:length])["inputs"][0]
            x = np.frombuffer(body, dtype=np.float32, offset=length).reshape(tensor["shape"])
            feeds = {tensor["name"]: x}
            if in_flight == 1:
                results = model.run(outputs, feeds)
            else:
                results = await asyncio.get_running_loop().run_in_executor(pool, model.run, outputs, feeds)
        finally:
            in_flight -= 1
        raw = [r.tobytes() for r in results]
        head = orjson.dumps(
            {
                "model_name": name,
                "outputs": [
                    {"name": n, "datatype": "FP32", "shape": list(r.shape), "parameters": {"binary_data_size": len(b)}}
                    for n, r, b in zip(outputs, results, raw, strict=True)
                ],
            }
        )
        return web.Response(
            body=b"".join([head, *raw]), content_type="application/octet-stream", headers={HEADER: str(len(head))}
        )

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post(f"/v2/models/{name}/infer", infer)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
