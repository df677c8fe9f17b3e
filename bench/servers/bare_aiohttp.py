"""A bare aiohttp + onnxruntime V2 JSON server with no features: the ceiling aiohttp itself allows.

``python bench/servers/bare_aiohttp.py MODEL.onnx NAME PORT THREADS`` (run with .venv/serve's python).
No validation, metrics, logging, batching or thread pool: onnxruntime runs on the event loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from runtime import memory
from runtime.engines import EngineOptions
from runtime.engines.onnx import session_options


def session(path: str, threads: int) -> ort.InferenceSession:
    """The model's session with modelport's options (also bench/servers/bare_binary.py's)."""
    options = session_options(EngineOptions(intra_op_threads=threads))
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    path, name, port, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    memory.tune_malloc()  # as modelport's main does
    session_ = session(path, threads)
    outputs = [o.name for o in session_.get_outputs()]

    async def infer(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        feeds = {t["name"]: np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in body["inputs"]}
        results = session_.run(outputs, feeds)
        answer = {
            "model_name": name,
            "outputs": [
                {"name": n, "datatype": "FP32", "shape": list(r.shape), "data": r.ravel().tolist()}
                for n, r in zip(outputs, results, strict=True)
            ],
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post(f"/v2/models/{name}/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
